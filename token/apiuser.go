package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"

	"github.com/irisx-broker/irisx-broker/internal/derrors"
	"github.com/irisx-broker/irisx-broker/store"
)

// Sentinel errors of APIUsers, besides ErrUnavailable and ErrInvalidScope.
var (
	// ErrAPIUserNotFound means no API user is registered under the name.
	ErrAPIUserNotFound = fmt.Errorf("token: API user %w", derrors.ErrNotFound)
	// ErrAPIUserRejected means Trackunit refused the API user's password
	// grant; no upstream call is made until the credentials are replaced.
	// It wraps ErrCredentialsRejected.
	ErrAPIUserRejected = fmt.Errorf("%w: API user", ErrCredentialsRejected)
)

// APIUserStore is what APIUsers needs from persistence; *store.Store
// satisfies it.
type APIUserStore interface {
	// APIUserToken reads the user's status and cached access token without
	// locking, or returns an error wrapping store.ErrNotFound.
	APIUserToken(ctx context.Context, name string) (store.APIUserToken, error)
	// LeaseAPIUser takes the user's refresh lease if it is free, in one
	// short statement, and returns the row.
	LeaseAPIUser(ctx context.Context, name, owner string, now, leaseUntil time.Time) (store.APIUserState, bool, error)
	// CommitAPIUserLease writes the refresh's outcome while the lease and
	// the spent refresh token are still the stored ones.
	CommitAPIUserLease(ctx context.Context, st store.APIUserState, owner string, upd store.APIUserUpdate) (store.APIUserToken, bool, error)
	// ReleaseAPIUserLease gives the lease up.
	ReleaseAPIUserLease(ctx context.Context, name, owner string) error
}

// apiUserKind is the API user kind's metrics label.
const apiUserKind = "api_user"

// APIUserTokens is the broker of Trackunit API users' tokens.
type APIUserTokens = APIUsers

// APIUsersConfig configures APIUsers. Zero values take the defaults.
type APIUsersConfig struct {
	// AuthURL is the base of the token endpoint; tokens come from POST
	// {AuthURL}/token. Required.
	AuthURL string
	// RefreshMargin is how long before expiry a token is renewed (default 5m).
	RefreshMargin time.Duration
	// Revalidate is how long a replica serves what it remembers of a user
	// before asking the database again, which bounds how long a deleted or
	// replaced user's token is still served elsewhere (default 1s).
	Revalidate time.Duration
	// HTTPClient makes the upstream calls; it should have its own timeout
	// (default: a client with a 10 s timeout).
	HTTPClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MaxAttempts is the number of upstream attempts per grant for 429, 5xx
	// and time-outs (default 3).
	MaxAttempts int
	// MaxRetryAfter caps an honoured Retry-After and the backoff (default 10s).
	MaxRetryAfter time.Duration
	// BaseBackoff is the first retry's backoff ceiling, doubled per retry,
	// with full jitter (default 200ms).
	BaseBackoff time.Duration
	// Sleep waits between attempts (default: a timer that honours ctx).
	Sleep func(ctx context.Context, d time.Duration) error
	// FetchTimeout bounds one shared fetch: the wait for another replica's
	// refresh, every attempt and the commit (default 30s).
	FetchTimeout time.Duration
	// LeaseTimeout is how long a replica's refresh lease lasts before
	// another may take over (default FetchTimeout plus 1 s).
	LeaseTimeout time.Duration
	// Logger receives operational logs (default: discarded).
	Logger *slog.Logger
	// Observer receives metrics events (optional).
	Observer Observer
	// TracerProvider, if set, spans each shared fetch (token.fetch).
	TracerProvider trace.TracerProvider
}

// APIUsers hands out access tokens for registered Trackunit API users. The
// database is the source of truth shared by every replica: it holds the
// current refresh token and the cached access token, and its row lock lets
// one replica at a time refresh a user. Each replica remembers the last
// token it saw for Revalidate and shares one database round per user among
// concurrent callers. It is safe for concurrent use.
type APIUsers struct {
	st         APIUserStore
	tokenURL   string
	margin     time.Duration
	revalidate time.Duration
	owner      string
	leaseFor   time.Duration
	policy
	obs Observer
	// afterUpstream, set by tests only, runs once Trackunit has answered a
	// grant with tokens and before they are committed; an error aborts the
	// transaction as a crash at that moment would.
	afterUpstream func() error

	flight singleflight.Group
	bg     sync.WaitGroup

	mu  sync.Mutex
	mem map[string]*userEntry
	// epoch counts Invalidate calls; a fetch that started before one does
	// not store what it read.
	epoch uint64
}

// userEntry is what a replica remembers of one user.
type userEntry struct {
	view    store.APIUserToken
	checked time.Time // when view was read from the database
	// refreshing is set while a background refresh runs; nextRefresh is
	// the earliest time another may start after one failed.
	refreshing  bool
	nextRefresh time.Time
}

// NewAPIUsers validates cfg, fills in defaults and returns an APIUsers.
func NewAPIUsers(cfg APIUsersConfig, st APIUserStore) (*APIUsers, error) {
	if st == nil {
		return nil, errors.New("token: nil API user store")
	}
	var errs []error
	if !validAuthURL(cfg.AuthURL) {
		errs = append(errs, errors.New("token: AuthURL must be an absolute http(s) URL"))
	}
	for _, d := range []time.Duration{cfg.RefreshMargin, cfg.Revalidate, cfg.MaxRetryAfter, cfg.BaseBackoff, cfg.FetchTimeout} {
		if d < 0 {
			errs = append(errs, errors.New("token: API user durations must not be negative"))
			break
		}
	}
	if cfg.MaxAttempts < 0 {
		errs = append(errs, errors.New("token: MaxAttempts must not be negative"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	b := &APIUsers{
		st:         st,
		tokenURL:   strings.TrimRight(cfg.AuthURL, "/") + "/token",
		margin:     cfg.RefreshMargin,
		revalidate: orDefault(cfg.Revalidate, time.Second),
		policy: newPolicy(policyConfig{
			HTTPClient: cfg.HTTPClient, Now: cfg.Now, MaxAttempts: cfg.MaxAttempts,
			MaxRetryAfter: cfg.MaxRetryAfter, BaseBackoff: cfg.BaseBackoff, Sleep: cfg.Sleep,
			FetchTimeout: cfg.FetchTimeout, Logger: cfg.Logger, Tracer: cfg.TracerProvider,
		}),
		obs: cfg.Observer,
		mem: make(map[string]*userEntry),
	}
	if b.obs == nil {
		b.obs = nopObserver{}
	}
	b.owner = newOwnerID()
	b.leaseFor = orDefault(cfg.LeaseTimeout, b.fetchTimeout+time.Second)
	return b, nil
}

// Token returns an access token for the API user registered as name with
// more than minValid (and at least a few seconds) left: the one this replica
// remembers, else the one cached in the database, else a new one obtained
// under the user's row lock, committed before it is returned. A token inside
// its refresh margin is still served while one background refresh runs.
func (b *APIUsers) Token(ctx context.Context, name string, minValid time.Duration) (Token, error) {
	if !store.ValidAPIUserName(name) {
		return Token{}, ErrAPIUserNotFound
	}
	need := max(minValid, minServeLeft)
	now := b.now()
	b.mu.Lock()
	if e := b.mem[name]; e != nil && now.Before(e.checked.Add(b.revalidate)) {
		if e.view.Status == store.APIUserCredentialsRejected {
			b.mu.Unlock()
			return Token{}, ErrAPIUserRejected
		}
		if left(e.view, now) > need {
			b.obs.CacheHit(apiUserKind)
			tok := tokenOf(e.view)
			b.refreshAheadLocked(ctx, name, e, now)
			b.mu.Unlock()
			return tok, nil
		}
	}
	b.mu.Unlock()
	b.obs.CacheMiss(apiUserKind)
	tok, err := b.fetch(ctx, name, need)
	if err == nil {
		// A token read from the database may already be inside its margin.
		b.mu.Lock()
		if e := b.mem[name]; e != nil {
			b.refreshAheadLocked(ctx, name, e, b.now())
		}
		b.mu.Unlock()
	}
	return tok, err
}

// Invalidate forgets what this replica remembers of the user, so the next
// call reads the database; a fetch in flight does not store its result. The
// API calls it after replacing or deleting a user; other replicas notice
// within Revalidate.
func (b *APIUsers) Invalidate(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.mem, name)
	b.epoch++
}
