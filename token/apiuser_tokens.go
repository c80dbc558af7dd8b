package token

import (
	"context"
	csubtle "crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/derrors"
	"github.com/irisx-broker/irisx-broker/store"
)

// Sentinel errors of APIUserTokens, besides ErrUnavailable and
// ErrInvalidScope.
var (
	// ErrAPIUserNotFound means no API user is registered under the name.
	ErrAPIUserNotFound = fmt.Errorf("token: API user %w", derrors.ErrNotFound)
	// ErrAPIUserRejected means Trackunit refused the API user's password
	// grant; no upstream call is made until the credentials are replaced.
	// It wraps ErrCredentialsRejected.
	ErrAPIUserRejected = fmt.Errorf("%w: API user", ErrCredentialsRejected)
)

// APIUserStore is what APIUserTokens needs from persistence; *store.Store
// satisfies it. The user's row is its lease: it holds the current refresh
// token and access token, shared by every replica.
type APIUserStore interface {
	// APIUserToken reads the user's status and cached access token without
	// locking, or returns an error wrapping store.ErrNotFound.
	APIUserToken(ctx context.Context, name string) (store.APIUserToken, error)
	// LeaseAPIUser returns the stored token when it is valid past now+need,
	// else takes the user's refresh lease if it is free, in one short
	// statement, and returns the row.
	LeaseAPIUser(ctx context.Context, name, owner string, now time.Time, need time.Duration, leaseUntil time.Time) (store.APIUserState, store.LeaseState, error)
	// CommitAPIUserLease writes the refresh's outcome while the lease and
	// the spent refresh token are still the stored ones.
	CommitAPIUserLease(ctx context.Context, st store.APIUserState, owner string, upd store.APIUserUpdate) (store.APIUserToken, bool, error)
	// ReleaseAPIUserLease gives the lease up.
	ReleaseAPIUserLease(ctx context.Context, name, owner string) error
}

// APIUserTokens hands out access tokens for registered Trackunit API users
// (POST /token, password grant first, then the rotating refresh token): the
// core with the API user kind. A user has one token, whatever the scopes. It
// is safe for concurrent use.
type APIUserTokens struct{ b *Broker }

// apiUserApp is the app part of an API user's cache key.
const apiUserApp = "\x02api-user"

// NewAPIUsers builds the API user broker. cfg.DefaultScopes is unused (a
// user's grants ask for its registered scopes); cfg.Revalidate defaults to
// 1 s, which bounds how long a user replaced or deleted through another
// replica is still served here.
func NewAPIUsers(cfg Config, st APIUserStore) (*APIUserTokens, error) {
	if st == nil {
		return nil, errors.New("token: nil API user store")
	}
	cfg.DefaultScopes = nil
	cfg.Revalidate = orDefault(cfg.Revalidate, time.Second)
	b, err := newCore(cfg, noInstalls{}, "/token")
	if err != nil {
		return nil, err
	}
	b.kind = apiUserKind{st: st}
	b.leases = apiUserLeases{b: b, st: st}
	return &APIUserTokens{b: b}, nil
}

// Token returns an access token for the API user registered as name with
// more than minValid (and at least a few seconds) left: the one cached
// here, else the one stored in the database, else a new one obtained under
// the user's fleet-wide lease and committed, with its rotated refresh
// token, before it is returned. A token inside its refresh window is still
// served while one background refresh runs.
func (t *APIUserTokens) Token(ctx context.Context, name string, minValid time.Duration) (Token, error) {
	if !store.ValidAPIUserName(name) {
		return Token{}, ErrAPIUserNotFound
	}
	key := string(appendKey(nil, apiUserApp, name, nil))
	f := fetchReq{key: key, install: key[:len(key)-1], app: apiUserApp, account: name, need: max(minValid, minServeLeft)}
	return t.b.serve(ctx, f, t.b.now())
}

// Invalidate drops the user's cached token and restarts its fetches; the API
// calls it after replacing or deleting the user. Other replicas notice
// within Revalidate.
func (t *APIUserTokens) Invalidate(name string) {
	t.b.cache.invalidate(apiUserApp + "\x00" + name)
}

// apiUserKind is the API user credential kind.
type apiUserKind struct{ st APIUserStore }

func (apiUserKind) name() string     { return "api_user" }
func (apiUserKind) label() string    { return "API user" }
func (apiUserKind) endpoint() string { return "token" }

func (apiUserKind) attrs(f fetchReq) []slog.Attr {
	return []slog.Attr{slog.String("api_user", f.account)}
}

// load checks that the user exists and is not rejected; its credentials
// are read with the lease, so a grant uses the row it holds.
func (k apiUserKind) load(ctx context.Context, f fetchReq) (store.Credentials, error) {
	_, err := k.read(ctx, f.account)
	return store.Credentials{}, err
}

func (k apiUserKind) read(ctx context.Context, name string) (store.APIUserToken, error) {
	v, err := k.st.APIUserToken(ctx, name)
	if err != nil {
		return v, apiUserStoreError(err)
	}
	if v.Status == store.APIUserCredentialsRejected {
		return v, ErrAPIUserRejected
	}
	return v, nil
}

// current: the row still holds e's token. A replaced user's tokens are
// erased, a refresh elsewhere stores another, an expiry moved in the
// database ends it.
func (k apiUserKind) current(ctx context.Context, f fetchReq, e *entry) (bool, error) {
	v, err := k.read(ctx, f.account)
	if err != nil {
		return false, err
	}
	return !v.AccessToken.IsZero() && v.ExpiresAt.Equal(e.tok.ExpiresAt.Truncate(time.Microsecond)) &&
		csubtle.ConstantTimeCompare([]byte(v.AccessToken.Reveal()), []byte(e.tok.AccessToken.Reveal())) == 1, nil
}

// apiUserStoreError classifies a store failure; it never carries a secret.
func apiUserStoreError(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrAPIUserNotFound, err)
	}
	return fmt.Errorf("%w: reading API user: %w", ErrUnavailable, err)
}

// apiUserLeases coordinates API users through their own row: the lease
// columns, the cached access token and the current refresh token.
type apiUserLeases struct {
	b  *Broker
	st APIUserStore
}

func (s apiUserLeases) acquire(ctx context.Context, f fetchReq, _ store.Credentials, now time.Time, need time.Duration, until time.Time) (acquired, error) {
	st, state, err := s.st.LeaseAPIUser(ctx, f.account, s.b.owner, now, need, until)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
			s.b.log.LogAttrs(ctx, slog.LevelError, "reading API user failed", slog.String("api_user", f.account), slog.Any("error", err))
		}
		return acquired{}, apiUserStoreError(err)
	}
	if st.Status == store.APIUserCredentialsRejected {
		return acquired{}, ErrAPIUserRejected
	}
	a := acquired{state: state}
	switch state {
	case store.TokenShared:
		a.tok, a.life = userToken(st.APIUserToken), lifetime(st.ExpiresAt, st.ObtainedAt)
	case store.LeaseTaken:
		a.lease = &apiUserLease{s: s, f: f, st: st}
	}
	return a, nil
}

func userToken(v store.APIUserToken) Token {
	return Token{AccessToken: v.AccessToken, TokenType: v.TokenType, ExpiresAt: v.ExpiresAt, Scopes: v.Scopes}
}
