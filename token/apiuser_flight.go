package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/irisx-broker/irisx-broker/store"
)

// fetchResult is what one shared fetch found.
type fetchResult struct {
	view   store.APIUserToken
	minted bool // obtained from Trackunit by this fetch
}

// fetch joins or starts the shared fetch for name. A fetch started by a
// caller that needed less may return a token too short for this one; then
// one more fetch is made with this caller's need.
func (b *APIUsers) fetch(ctx context.Context, name string, need time.Duration) (Token, error) {
	for round := 1; ; round++ {
		if err := ctx.Err(); err != nil {
			return Token{}, fmt.Errorf("token: %w", err)
		}
		ch := b.flight.DoChan(name, b.fetchFunc(context.WithoutCancel(ctx), name, need))
		var res singleflight.Result
		select {
		case <-ctx.Done():
			return Token{}, fmt.Errorf("token: waiting for the API user token: %w", ctx.Err())
		case res = <-ch:
		}
		if res.Err != nil {
			return Token{}, res.Err
		}
		r := res.Val.(fetchResult)
		if r.minted || left(r.view, b.now()) > need || round >= 2 {
			return tokenOf(r.view), nil
		}
	}
}

// fetchFunc is one shared fetch, detached from every caller and bounded by
// fetchTimeout: it reads the database and, when the token there does not
// have more than accept left, refreshes under the row lock.
func (b *APIUsers) fetchFunc(ctx context.Context, name string, accept time.Duration) func() (any, error) {
	return func() (_ any, err error) {
		ctx, cancel := context.WithTimeout(ctx, b.fetchTimeout)
		defer cancel()
		ctx, end := b.startFetch(ctx, apiUserKind)
		defer func() { end(err) }()
		start := b.currentEpoch()
		view, err := b.st.APIUserToken(ctx, name)
		if err != nil {
			return nil, b.storeError(ctx, name, err)
		}
		b.remember(name, view, start)
		if view.Status == store.APIUserCredentialsRejected {
			return nil, ErrAPIUserRejected
		}
		if left(view, b.now()) > accept {
			return fetchResult{view: view}, nil
		}
		r, err := b.refresh(ctx, name, accept)
		if r.view.Name != "" {
			b.remember(name, r.view, start)
		}
		if err != nil {
			return nil, err
		}
		return r, nil
	}
}

// refreshAheadLocked starts one background refresh of a remembered token
// that is inside its refresh margin. b.mu is held.
func (b *APIUsers) refreshAheadLocked(ctx context.Context, name string, e *userEntry, now time.Time) {
	margin := b.marginFor(e.view)
	if e.refreshing || left(e.view, now) > margin || now.Before(e.nextRefresh) {
		return
	}
	e.refreshing = true
	b.obs.RefreshAhead(apiUserKind)
	fn := b.fetchFunc(context.WithoutCancel(ctx), name, margin)
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		res := <-b.flight.DoChan(name, fn)
		b.mu.Lock()
		defer b.mu.Unlock()
		e.refreshing = false
		if res.Err != nil {
			// The remembered token is served while it lasts; an outage is
			// not hammered.
			e.nextRefresh = b.now().Add(refreshRetryDelay)
		}
	}()
}

func (b *APIUsers) currentEpoch() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.epoch
}

// remember stores what was read from the database, unless the user was
// invalidated since start.
func (b *APIUsers) remember(name string, view store.APIUserToken, start uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.epoch != start {
		return
	}
	e := b.mem[name]
	if e == nil {
		e = &userEntry{}
		b.mem[name] = e
	}
	e.view, e.checked = view, b.now()
}

func (b *APIUsers) forget(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.mem, name)
}

// storeError classifies a store failure; it never carries a secret.
func (b *APIUsers) storeError(ctx context.Context, name string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		b.forget(name)
		return fmt.Errorf("%w: %w", ErrAPIUserNotFound, err)
	}
	b.log.LogAttrs(ctx, slog.LevelError, "reading API user failed", slog.String("api_user", name), slog.Any("error", err))
	return fmt.Errorf("%w: reading API user: %w", ErrUnavailable, err)
}

// marginFor is the refresh margin of v's token: RefreshMargin, but at most
// half the token's lifetime, so a margin longer than Trackunit's tokens live
// cannot make every call refresh.
func (b *APIUsers) marginFor(v store.APIUserToken) time.Duration {
	if v.ObtainedAt.IsZero() {
		return b.margin
	}
	return min(b.margin, v.ExpiresAt.Sub(v.ObtainedAt)/2)
}

// left is how long view's access token is still valid; zero without one.
func left(v store.APIUserToken, now time.Time) time.Duration {
	if v.AccessToken.IsZero() {
		return 0
	}
	return v.ExpiresAt.Sub(now)
}

func tokenOf(v store.APIUserToken) Token {
	return Token{AccessToken: v.AccessToken, TokenType: v.TokenType, ExpiresAt: v.ExpiresAt, Scopes: slices.Clone(v.Scopes)}
}
