package token

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/store"
)

// SharedStore keeps the current token of every (credential, scope set) for
// the whole fleet, with the lease that lets one replica mint it;
// *store.Store has it. A Store without it (a test fake) mints per replica.
type SharedStore interface {
	AcquireToken(ctx context.Context, k store.TokenKey, version int64, owner string, now time.Time, need time.Duration, leaseUntil time.Time) (store.SharedToken, store.LeaseState, error)
	CommitToken(ctx context.Context, k store.TokenKey, owner string, tok store.SharedToken) (bool, error)
	ReleaseToken(ctx context.Context, k store.TokenKey, owner string) error
}

// leasePoll is how often a replica waiting for another's mint reads the
// row again (plus up to as much jitter).
const leasePoll = 25 * time.Millisecond

// mintShared obtains the fleet's one token for f: the stored one when it is
// valid for f.need, else this replica takes the lease and mints. Each step
// is one short statement: no database connection is held while Trackunit
// answers, and a waiter polls the row rather than waiting on a lock.
func (b *Broker) mintShared(ctx context.Context, f fetchReq, creds store.Credentials) (Token, error) {
	k := b.kind.sharedKey(f)
	for {
		now := b.now()
		st, state, err := b.shared.AcquireToken(ctx, k, creds.Version, b.owner, now, f.need, now.Add(b.leaseFor))
		if err != nil {
			if ctx.Err() != nil {
				return Token{}, fmt.Errorf("%w: waiting for another replica's token: %w", ErrUnavailable, ctx.Err())
			}
			b.log.LogAttrs(ctx, slog.LevelError, "reading the shared token failed", append(b.kind.attrs(f), slog.Any("error", err))...)
			return Token{}, fmt.Errorf("%w: reading the shared token: %w", ErrUnavailable, err)
		}
		switch state {
		case store.TokenShared:
			return Token{AccessToken: st.AccessToken, TokenType: st.TokenType, ExpiresAt: st.ExpiresAt, Scopes: st.Scopes}, nil
		case store.LeaseTaken:
			return b.mintLeased(ctx, f, k, creds)
		}
		if err := sleepCtx(ctx, leasePoll+time.Duration(b.rand()*float64(leasePoll))); err != nil {
			return Token{}, fmt.Errorf("%w: waiting for another replica's token: %w", ErrUnavailable, err)
		}
	}
}

// mintLeased calls Trackunit under the lease and commits the token, or
// gives the lease up when the call failed.
func (b *Broker) mintLeased(ctx context.Context, f fetchReq, k store.TokenKey, creds store.Credentials) (Token, error) {
	tok, err := b.call(ctx, f, creds)
	if err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if rerr := b.shared.ReleaseToken(rctx, k, b.owner); rerr != nil {
			b.log.LogAttrs(ctx, slog.LevelWarn, "releasing the token lease failed", append(b.kind.attrs(f), slog.Any("error", rerr))...)
		}
		return Token{}, err
	}
	if b.afterUpstream != nil {
		if herr := b.afterUpstream(); herr != nil {
			return Token{}, fmt.Errorf("%w: %w", ErrUnavailable, herr)
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	ok, err := b.shared.CommitToken(cctx, k, b.owner, store.SharedToken{AccessToken: tok.AccessToken,
		TokenType: tok.TokenType, Scopes: tok.Scopes, ExpiresAt: tok.ExpiresAt, Version: creds.Version})
	switch {
	case err != nil:
		// The token is good; the fleet just does not share it.
		b.log.LogAttrs(ctx, slog.LevelWarn, "storing the shared token failed", append(b.kind.attrs(f), slog.Any("error", err))...)
	case !ok:
		b.log.LogAttrs(ctx, slog.LevelWarn, "token lease expired before the token was stored", b.kind.attrs(f)...)
	}
	return tok, nil
}

func joinScopes(scopes []string) string { return strings.Join(scopes, " ") }

// newOwnerID names this broker in leases.
func newOwnerID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Limiter bounds detached upstream fetches in flight across every kind;
// share one among the brokers of a process.
type Limiter struct{ slots chan struct{} }

// NewLimiter allows n fetches in flight at once.
func NewLimiter(n int) *Limiter { return &Limiter{slots: make(chan struct{}, n)} }

func (l *Limiter) tryAcquire() bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (l *Limiter) release() { <-l.slots }

// limits are a kind's own cap and the global one.
type limits struct{ global, kind *Limiter }

func newLimits(global *Limiter, perKind int) limits {
	return limits{global: global, kind: NewLimiter(perKind)}
}

// errTooManyFetches is what the excess over a cap gets, at once.
var errTooManyFetches = fmt.Errorf("%w: too many token fetches in flight", ErrUnavailable)

func (l limits) acquire() (func(), error) {
	if !l.kind.tryAcquire() {
		return nil, errTooManyFetches
	}
	if l.global != nil && !l.global.tryAcquire() {
		l.kind.release()
		return nil, errTooManyFetches
	}
	return func() {
		if l.global != nil {
			l.global.release()
		}
		l.kind.release()
	}, nil
}
