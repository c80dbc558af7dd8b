package token

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
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

// leases is how a kind's mints are coordinated across the fleet: the
// shared_tokens table for installs and API keys, the api_users row for API
// users. acquire is the first short step, one statement: the stored token
// when it is valid past now+need, else this replica's lease until until
// when it is free or expired, else busy (another replica is minting).
type leases interface {
	acquire(ctx context.Context, f fetchReq, creds store.Credentials, now time.Time, need time.Duration, until time.Time) (acquired, error)
}

// acquired is what the lease step found.
type acquired struct {
	state store.LeaseState
	tok   Token         // TokenShared: the fleet's token
	life  time.Duration // its whole lifetime when the store knows it, else 0
	lease lease         // LeaseTaken
}

// lease is this replica's hold on one credential's mint.
type lease interface {
	// grant calls Trackunit; its errors are classified and scrubbed.
	grant(ctx context.Context) (Token, error)
	// commit is the second short step: it stores the granted token (and
	// what else the grant returned) only while the lease is still ours,
	// and releases it. ok false: nothing was stored.
	commit(ctx context.Context, tok Token) (Token, bool, error)
	// release gives the lease up after a failed grant, recording the
	// failure where the kind keeps one.
	release(ctx context.Context) error
	// rotates reports that the grant spent a secret and its answer carries
	// the next one (a rotating refresh token): its token is handed out only
	// once committed, since the fleet could not redeem the next secret if
	// the commit were lost.
	rotates() bool
}

// leasePoll is how often a replica waiting for another's mint reads the
// row again (plus up to as much jitter).
const leasePoll = 25 * time.Millisecond

// mintShared obtains the fleet's one token for f: the stored one when it is
// valid for f.need, else this replica takes the lease and mints. Each step
// is one short statement: no database connection is held while Trackunit
// answers, and a waiter polls the row rather than waiting on a lock.
func (b *Broker) mintShared(ctx context.Context, f fetchReq, creds store.Credentials) (Token, time.Duration, error) {
	for {
		now := b.now()
		a, err := b.leases.acquire(ctx, f, creds, now, f.need, now.Add(b.leaseFor))
		if err != nil {
			if ctx.Err() != nil {
				return Token{}, 0, fmt.Errorf("%w: waiting for another replica's token: %w", ErrUnavailable, ctx.Err())
			}
			return Token{}, 0, err
		}
		switch a.state {
		case store.TokenShared:
			return a.tok, a.life, nil
		case store.LeaseTaken:
			tok, err := b.mintLeased(ctx, f, a.lease)
			return tok, 0, err
		}
		if err := sleepCtx(ctx, leasePoll+time.Duration(b.rand()*float64(leasePoll))); err != nil {
			return Token{}, 0, fmt.Errorf("%w: waiting for another replica's token: %w", ErrUnavailable, err)
		}
	}
}

// mintLeased calls Trackunit under the lease and commits the token, or
// gives the lease up when the call failed. A token whose grant rotated a
// secret is handed out only once that is committed.
func (b *Broker) mintLeased(ctx context.Context, f fetchReq, l lease) (Token, error) {
	tok, err := l.grant(ctx)
	if err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if rerr := l.release(rctx); rerr != nil {
			b.log.LogAttrs(ctx, slog.LevelWarn, "releasing the token lease failed", append(b.kind.attrs(f), slog.Any("error", rerr))...)
		}
		return Token{}, err
	}
	if b.afterUpstream != nil {
		if herr := b.afterUpstream(); herr != nil {
			// As a crash here would: nothing committed, the lease left to
			// run out.
			return Token{}, fmt.Errorf("%w: %w", ErrUnavailable, herr)
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	stored, ok, err := l.commit(cctx, tok)
	if err == nil && !ok {
		err = errors.New("the lease expired or the credential changed meanwhile")
	}
	switch {
	case err != nil && l.rotates():
		// The secret Trackunit just rotated is lost; the stored one is
		// redeemed next (within the server's grace window), else the kind
		// starts over.
		b.log.LogAttrs(ctx, slog.LevelError, "committing the new "+b.kind.label()+" tokens failed; they are discarded",
			append(b.kind.attrs(f), slog.Any("error", err))...)
		return Token{}, fmt.Errorf("%w: committing the new tokens: %w", ErrUnavailable, err)
	case err != nil:
		// The token is good; the fleet just does not share it.
		b.log.LogAttrs(ctx, slog.LevelWarn, "storing the shared token failed", append(b.kind.attrs(f), slog.Any("error", err))...)
		return tok, nil
	}
	return stored, nil
}

// sharedLeases coordinates a client-credentials kind through the
// shared_tokens table.
type sharedLeases struct {
	b  *Broker
	st SharedStore
	k  clientCredentials
}

func (s sharedLeases) acquire(ctx context.Context, f fetchReq, creds store.Credentials, now time.Time, need time.Duration, until time.Time) (acquired, error) {
	key := s.k.sharedKey(f)
	st, state, err := s.st.AcquireToken(ctx, key, creds.Version, s.b.owner, now, need, until)
	if err != nil {
		if ctx.Err() == nil {
			s.b.log.LogAttrs(ctx, slog.LevelError, "reading the shared token failed", append(s.k.attrs(f), slog.Any("error", err))...)
		}
		return acquired{}, fmt.Errorf("%w: reading the shared token: %w", ErrUnavailable, err)
	}
	a := acquired{state: state}
	switch state {
	case store.TokenShared:
		a.tok = Token{AccessToken: st.AccessToken, TokenType: st.TokenType, ExpiresAt: st.ExpiresAt, Scopes: st.Scopes}
		a.life = lifetime(st.ExpiresAt, st.ObtainedAt)
	case store.LeaseTaken:
		a.lease = &sharedLease{s: s, f: f, key: key, creds: creds}
	}
	return a, nil
}

// sharedLease is a lease on one shared_tokens row.
type sharedLease struct {
	s     sharedLeases
	f     fetchReq
	key   store.TokenKey
	creds store.Credentials
}

func (l *sharedLease) grant(ctx context.Context) (Token, error) {
	return l.s.b.call(ctx, l.s.k, l.f, l.creds)
}
func (l *sharedLease) rotates() bool { return false }

func (l *sharedLease) commit(ctx context.Context, tok Token) (Token, bool, error) {
	ok, err := l.s.st.CommitToken(ctx, l.key, l.s.b.owner, store.SharedToken{AccessToken: tok.AccessToken,
		TokenType: tok.TokenType, Scopes: tok.Scopes, ExpiresAt: tok.ExpiresAt, Version: l.creds.Version})
	return tok, ok, err
}

func (l *sharedLease) release(ctx context.Context) error {
	return l.s.st.ReleaseToken(ctx, l.key, l.s.b.owner)
}

// localLeases lets every fetch mint: a store without SharedStore (a test
// fake) shares nothing.
type localLeases struct {
	b *Broker
	k clientCredentials
}

func (s localLeases) acquire(_ context.Context, f fetchReq, creds store.Credentials, _ time.Time, _ time.Duration, _ time.Time) (acquired, error) {
	return acquired{state: store.LeaseTaken, lease: localLease{s: s, f: f, creds: creds}}, nil
}

type localLease struct {
	s     localLeases
	f     fetchReq
	creds store.Credentials
}

func (l localLease) grant(ctx context.Context) (Token, error) {
	return l.s.b.call(ctx, l.s.k, l.f, l.creds)
}
func (l localLease) commit(_ context.Context, tok Token) (Token, bool, error) {
	return tok, true, nil
}
func (localLease) release(context.Context) error { return nil }
func (localLease) rotates() bool                 { return false }

// lifetime is a stored token's whole lifetime, 0 when unknown.
func lifetime(expires, obtained time.Time) time.Duration {
	if obtained.IsZero() {
		return 0
	}
	return max(expires.Sub(obtained), 0)
}

func joinScopes(scopes []string) string { return strings.Join(scopes, " ") }

// newOwnerID names this broker in leases.
func newOwnerID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
