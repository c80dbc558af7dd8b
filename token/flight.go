package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/derrors"
)

// fetchReq is what a shared fetch needs; it owns its strings and slice, so
// it may outlive the caller that started it.
type fetchReq struct {
	key, install, app, account string
	scopes                     []string
	// need is how long a token must still be valid for this fetch to
	// take it from the database instead of minting.
	need time.Duration
}

// maxStaleRounds bounds how often a fetch starts over because its install
// was invalidated meanwhile.
const maxStaleRounds = 3

// refreshRetryDelay is how long a failed background refresh waits before
// a hit may start another one.
const refreshRetryDelay = 10 * time.Second

// wait joins or starts the shared fetch for f.key and waits for it or for
// ctx. seen is the entry the caller found unusable, or nil.
func (b *Broker) wait(ctx context.Context, f fetchReq, seen *entry) (Token, error) {
	if err := ctx.Err(); err != nil {
		// Nobody would wait for a fetch started now.
		return Token{}, fmt.Errorf("token: %w", err)
	}
	ch := b.flight.DoChan(f.key, b.flightFunc(context.WithoutCancel(ctx), f, seen))
	select {
	case <-ctx.Done():
		return Token{}, fmt.Errorf("token: waiting for the token endpoint: %w", ctx.Err())
	case res := <-ch:
		if res.Err != nil {
			return Token{}, res.Err
		}
		return res.Val.(Token).clone(), nil
	}
}

// refreshAhead starts one background refresh of e, which is still served.
func (b *Broker) refreshAhead(ctx context.Context, e *entry) {
	if !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	b.obs.RefreshAhead(b.kind.name())
	// A token shared in the database is taken only if it lives longer than
	// the one being refreshed did when its refresh came due: otherwise it
	// is that same token, and this replica mints (once for the fleet).
	f := fetchReq{key: e.key, install: e.install(), app: e.app(), account: e.account(), scopes: e.scopes(),
		need: max(e.tok.ExpiresAt.Sub(time.Unix(0, e.nextRefresh.Load())), minServeLeft) + time.Second}
	fn := b.flightFunc(context.WithoutCancel(ctx), f, e)
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		res := <-b.flight.DoChan(f.key, fn)
		if res.Err != nil {
			// e stays cached and served while it satisfies callers; the next
			// refresh may start after a pause.
			e.nextRefresh.Store(b.now().Add(refreshRetryDelay).UnixNano())
			e.refreshing.Store(false)
		}
	}()
}

// flightFunc is the shared fetch. It runs on a context detached from every
// caller, bounded by fetchTimeout. A caller that missed the cache just
// before another fetch filled it would otherwise start a second upstream
// call, so the fetch first takes any entry newer than the one its caller saw.
func (b *Broker) flightFunc(ctx context.Context, f fetchReq, seen *entry) func() (any, error) {
	return func() (any, error) {
		ctx, cancel := context.WithTimeout(ctx, b.fetchTimeout)
		defer cancel()
		if cur := b.cache.peek(f.key); cur != nil && cur != seen && cur.tok.ExpiresAt.Sub(b.now()) > minServeLeft {
			return cur.tok, nil
		}
		release, err := b.limits.acquire()
		if err != nil {
			return Token{}, err
		}
		defer release()
		ctx, end := b.startFetch(ctx, b.kind.name())
		tok, err := b.fetch(ctx, f)
		end(err)
		return tok, err
	}
}

// fetch mints a token and caches it, starting over when the install was
// invalidated while it ran: a token minted with replaced credentials, or
// for an install since uninstalled, is never cached or handed out.
func (b *Broker) fetch(ctx context.Context, f fetchReq) (Token, error) {
	for round := 1; ; round++ {
		start := b.cache.currentEpoch()
		m, err := b.mint(ctx, f)
		if err == nil {
			if b.cache.put(b.newEntry(f, m), start, b.now()) {
				return m.tok, nil
			}
		} else if !b.cache.stale(f.install, start) {
			b.dropOnDefiniteError(f, err)
			return Token{}, err
		}
		if ctx.Err() != nil {
			return Token{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
		if round >= maxStaleRounds {
			return Token{}, fmt.Errorf("%w: install changed during every fetch attempt", ErrUnavailable)
		}
		b.log.LogAttrs(ctx, slog.LevelInfo, b.kind.label()+" invalidated during token fetch; fetching again", b.kind.attrs(f)...)
	}
}

// dropOnDefiniteError ends cached tokens that a fetch (typically a refresh
// ahead) found no longer stand: the install is gone, uninstalled or its
// credentials rejected, even if no Invalidate reached this replica; or the
// scope set is no longer granted.
func (b *Broker) dropOnDefiniteError(f fetchReq, err error) {
	switch {
	case errors.Is(err, derrors.ErrNotFound), errors.Is(err, derrors.ErrRejected):
		b.cache.dropInstall(f.install)
	case errors.Is(err, ErrInvalidScope):
		b.cache.drop(f.key)
	}
}

// newEntry wraps a token with its jittered refresh point: each entry renews
// at a random point in [margin, 1.2*margin] before expiry, and never later
// than half its lifetime (the whole one when the store knows it, else what
// is left), so short-lived tokens are still renewed ahead and a fleet of
// entries does not renew in lock-step.
func (b *Broker) newEntry(f fetchReq, m minted) *entry {
	now := b.now()
	tok := m.tok
	margin := b.margin + time.Duration(b.rand()*0.2*float64(b.margin))
	life := max(m.life, tok.ExpiresAt.Sub(now))
	margin = min(margin, life/2)
	if tok.TokenType == "Bearer" {
		tok.TokenType = "Bearer" // not the decoded copy
	}
	e := newEntryFor(f)
	e.tok, e.version = tok, m.version
	e.nextRefresh.Store(tok.ExpiresAt.Add(-margin).UnixNano())
	e.checked.Store(now.UnixNano())
	return e
}
