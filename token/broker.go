package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/store"
)

// Store is what the broker needs from persistence; *store.Store satisfies it.
type Store interface {
	// InstallCredentials returns the install's decrypted credentials and
	// status, or an error wrapping store.ErrNotFound.
	InstallCredentials(ctx context.Context, irisAppID, accountID string) (store.Credentials, error)
	// MarkCredentialsRejected sets the install credentials_rejected if its
	// credentials are still at version.
	MarkCredentialsRejected(ctx context.Context, irisAppID, accountID string, version int64, lastError string) error
	// RecordTokenResults stores lastTokenAt / lastError for a batch of installs.
	RecordTokenResults(ctx context.Context, results []store.TokenResult) error
}

// Observer receives metrics events, one shape for every credential kind;
// *metrics.Metrics satisfies it. Implementations must be cheap and safe for
// concurrent use; Token calls CacheHit on its hot path.
type Observer interface {
	// CacheHit is called when Token answers from the cache; kind is
	// install, api_key or api_user.
	CacheHit(kind string)
	// CacheMiss is called when Token has to wait for a fetch.
	CacheMiss(kind string)
	// RefreshAhead is called when a background refresh starts.
	RefreshAhead(kind string)
	// UpstreamCall is called after each upstream attempt at endpoint
	// (apptoken, token, token_v2) with one of the outcomes ok,
	// rate_limited, server_error, timeout, network_error, bad_response,
	// invalid_client, invalid_scope, client_error.
	UpstreamCall(endpoint, outcome string, d time.Duration)
}

// Config configures the broker of any kind (New, NewAPIKeys, NewAPIUsers).
// Zero values take the documented defaults.
type Config struct {
	// AuthURL is the base of the token endpoints; tokens come from POST
	// {AuthURL}/apptoken, /token/v2 or /token, by kind. Required.
	AuthURL string
	// DefaultScopes are used when a request names none.
	DefaultScopes []string
	// RefreshMargin is how long before expiry a token is renewed (default 5m).
	RefreshMargin time.Duration
	// HTTPClient makes the upstream calls; it should have its own timeout
	// (default: a client with a 10 s timeout).
	HTTPClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MaxEntries bounds the number of cached tokens (default 100,000).
	MaxEntries int
	// MaxAttempts is the number of upstream attempts per fetch (default 3).
	MaxAttempts int
	// MaxRetryAfter caps an honoured Retry-After and the backoff (default 10s).
	MaxRetryAfter time.Duration
	// BaseBackoff is the first retry's backoff ceiling, doubled per retry,
	// with full jitter (default 200ms).
	BaseBackoff time.Duration
	// Sleep waits between attempts (default: a timer that honours ctx).
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger receives operational logs (default: discarded).
	Logger *slog.Logger
	// Observer receives metrics events (optional).
	Observer Observer
	// TracerProvider, if set, spans each shared fetch (token.fetch).
	TracerProvider trace.TracerProvider
	// FetchTimeout bounds one shared fetch, all attempts and waits included;
	// it is detached from any one caller (default 30s).
	FetchTimeout time.Duration
	// ResultBuffer is how many lastTokenAt / lastError results may wait for
	// Run before new ones are dropped (default 4096).
	ResultBuffer int
	// FlushInterval is how often Run writes the results it has coalesced
	// (default 1s).
	FlushInterval time.Duration
	// LeaseTimeout is how long a replica's lease on a fleet-wide mint lasts
	// before another may take over (default FetchTimeout plus 1 s).
	LeaseTimeout time.Duration
	// Fetches bounds the detached upstream fetches in flight, shared by
	// every kind (default: a limit of its own of MaxFetches).
	Fetches *Limiter
	// MaxFetches bounds this kind's fetches in flight (default 256); the
	// excess fails at once with ErrUnavailable.
	MaxFetches int
	// Confirmed, if set, reports whether the install-change listener
	// proved itself alive within the last second; while it does not, a
	// cached token is served only after the credential's row is checked.
	Confirmed func() bool
	// Revalidate, if set, is how long a cached token is served before the
	// credential's row is read again, which bounds how long a change made
	// through another replica and not notified goes unseen. NewAPIUsers
	// defaults it to 1 s: API user changes are not notified.
	Revalidate time.Duration
}

// Request asks for an access token for one install.
type Request struct {
	IrisAppID string // the app, e.g. "@org/app"
	AccountID string // the installing account
	// Scopes requested; empty means Config.DefaultScopes. Order and
	// duplicates do not matter.
	Scopes []string
	// MinValid is how long a cached token must still be valid for to be
	// served; a cached token is never served with less than 5 s left.
	MinValid time.Duration
}

// Token is a minted access token.
type Token struct {
	AccessToken crypto.Secret // reveal only to hand it to the caller
	TokenType   string        // "Bearer" unless the endpoint says otherwise
	ExpiresAt   time.Time     // on the broker's clock, from when the request was sent
	// Scopes granted: the upstream's scope field when present, else the
	// scopes requested.
	Scopes []string
}

func (t Token) clone() Token {
	t.Scopes = slices.Clone(t.Scopes)
	return t
}

// minServeLeft is the least lifetime a cached token must have to be served
// at all, so it does not expire on its way to the caller.
const minServeLeft = 5 * time.Second

// Broker mints, caches and renews install access tokens. It is safe for
// concurrent use.
type Broker struct {
	st            Store
	tokenURL      string
	defaultScopes []string
	margin        time.Duration
	policy
	obs           Observer
	flushInterval time.Duration

	kind       credKind
	leases     leases // how the fleet shares the kind's tokens (shared.go)
	owner      string // this replica's lease id
	leaseFor   time.Duration
	limits     limits
	confirmed  func() bool
	revalidate time.Duration
	// afterUpstream, set by tests only, runs once Trackunit has answered
	// and before the token is committed; an error stops there, as a crash
	// at that moment would (the lease is neither committed nor released).
	afterUpstream func() error

	cache   *cache
	flight  singleflight.Group
	checks  singleflight.Group // Revalidate's reads, one per key at a time
	results chan store.TokenResult
	dropped atomic.Int64
	// bg tracks refresh-ahead goroutines so tests can wait for them.
	bg sync.WaitGroup
}

// New validates cfg, fills in defaults and returns a Broker. Call Run in the
// background to persist token results.
func New(cfg Config, st Store) (*Broker, error) {
	if st == nil {
		return nil, errors.New("token: nil store")
	}
	b, err := newCore(cfg, st, "/apptoken")
	if err != nil {
		return nil, err
	}
	b.setClientCredentials(installKind{b: b, st: st}, st)
	return b, nil
}

// setClientCredentials makes b serve a client-credentials kind, its tokens
// shared through shared_tokens when st has it.
func (b *Broker) setClientCredentials(k clientCredentials, st any) {
	b.kind = k
	if ss, ok := st.(SharedStore); ok {
		b.leases = sharedLeases{b: b, st: ss, k: k}
	} else {
		b.leases = localLeases{b: b, k: k}
	}
}

// newCore builds the part of a broker every kind shares.
func newCore(cfg Config, st Store, path string) (*Broker, error) {
	var errs []error
	if !validAuthURL(cfg.AuthURL) {
		errs = append(errs, errors.New("token: AuthURL must be an absolute http(s) URL"))
	}
	defaults, err := normalizeScopes(cfg.DefaultScopes)
	if err != nil {
		errs = append(errs, fmt.Errorf("token: DefaultScopes: %w", err))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"RefreshMargin", cfg.RefreshMargin}, {"MaxRetryAfter", cfg.MaxRetryAfter},
		{"BaseBackoff", cfg.BaseBackoff}, {"FetchTimeout", cfg.FetchTimeout}, {"FlushInterval", cfg.FlushInterval},
		{"Revalidate", cfg.Revalidate},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("token: %s must not be negative", d.name))
		}
	}
	if cfg.MaxEntries < 0 || cfg.MaxAttempts < 0 || cfg.ResultBuffer < 0 || cfg.MaxFetches < 0 || cfg.LeaseTimeout < 0 {
		errs = append(errs, errors.New("token: MaxEntries, MaxAttempts, ResultBuffer, MaxFetches and LeaseTimeout must not be negative"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	b := &Broker{
		st:            st,
		tokenURL:      strings.TrimRight(cfg.AuthURL, "/") + path,
		defaultScopes: slices.Clone(defaults),
		// TOKEN_REFRESH_MARGIN=0 means no margin: refresh at expiry.
		margin: cfg.RefreshMargin,
		policy: newPolicy(policyConfig{
			HTTPClient: cfg.HTTPClient, Now: cfg.Now, MaxAttempts: cfg.MaxAttempts,
			MaxRetryAfter: cfg.MaxRetryAfter, BaseBackoff: cfg.BaseBackoff, Sleep: cfg.Sleep,
			FetchTimeout: cfg.FetchTimeout, Logger: cfg.Logger, Tracer: cfg.TracerProvider,
		}),
		obs:           cfg.Observer,
		flushInterval: orDefault(cfg.FlushInterval, time.Second),
		cache:         newCache(orDefault(cfg.MaxEntries, 100_000)),
		results:       make(chan store.TokenResult, orDefault(cfg.ResultBuffer, 4096)),
	}
	if b.obs == nil {
		b.obs = nopObserver{}
	}
	b.owner = newOwnerID()
	b.leaseFor = orDefault(cfg.LeaseTimeout, b.fetchTimeout+time.Second)
	b.limits = newLimits(cfg.Fetches, orDefault(cfg.MaxFetches, 256))
	b.confirmed = cfg.Confirmed
	b.revalidate = cfg.Revalidate
	return b, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Token returns an access token for the install and scope set, from the
// cache when one is valid for r.MinValid, else from a fetch shared with
// every concurrent caller of the same key. It returns at ctx's deadline
// even while the shared fetch goes on for the others.
func (b *Broker) Token(ctx context.Context, r Request) (Token, error) {
	if !validID(r.IrisAppID) || !validID(r.AccountID) {
		return Token{}, fmt.Errorf("%w: empty or malformed irisAppId or accountId", ErrNotFound)
	}
	scopes, err := normalizeScopes(r.Scopes)
	if err != nil {
		return Token{}, err
	}
	if len(scopes) == 0 {
		scopes = b.defaultScopes
	}
	if len(scopes) == 0 {
		return Token{}, ErrNoScopes
	}

	// The key is built on the stack and looked up without allocating.
	var buf [256]byte
	key := appendKey(buf[:0], r.IrisAppID, r.AccountID, scopes)
	now := b.now()
	need := max(r.MinValid, minServeLeft)

	if e := b.cache.get(key); e != nil && e.tok.ExpiresAt.Sub(now) > need && !b.checkDue(e, now) {
		b.obs.CacheHit(b.kind.name())
		if now.UnixNano() >= e.nextRefresh.Load() {
			b.refreshAhead(ctx, e)
		}
		return e.tok.clone(), nil
	}
	// The fetch and the entry it caches own their strings: substrings of
	// the key, and the defaults (never modified) when those were asked for.
	k := string(key)
	owned := b.defaultScopes
	if !slices.Equal(scopes, owned) {
		owned = slices.Clone(scopes)
	}
	f := fetchReq{key: k, install: k[:len(r.IrisAppID)+1+len(r.AccountID)],
		app: k[:len(r.IrisAppID)], account: k[len(r.IrisAppID)+1 : len(r.IrisAppID)+1+len(r.AccountID)], scopes: owned, need: need}
	return b.serve(ctx, f, now)
}

// serve answers from the cache or a shared fetch; f.key is the cache key.
func (b *Broker) serve(ctx context.Context, f fetchReq, now time.Time) (Token, error) {
	e := b.cache.peek(f.key)
	if e != nil && e.tok.ExpiresAt.Sub(now) > f.need {
		if err := b.recheck(ctx, f, e, now); err != nil {
			return Token{}, err
		}
		if b.cache.peek(f.key) == e {
			b.obs.CacheHit(b.kind.name())
			if now.UnixNano() >= e.nextRefresh.Load() {
				b.refreshAhead(ctx, e)
			}
			return e.tok.clone(), nil
		}
	}
	b.obs.CacheMiss(b.kind.name())
	tok, err := b.wait(ctx, f, e)
	if err == nil {
		// A token another replica stored may already be inside its
		// refresh window.
		if cur := b.cache.peek(f.key); cur != nil && b.now().UnixNano() >= cur.nextRefresh.Load() {
			b.refreshAhead(ctx, cur)
		}
	}
	return tok, err
}

// checkDue reports whether e must be checked against its credential's row
// before it is served: always while the install-change listener cannot
// confirm it is alive, and every Revalidate where that is set.
func (b *Broker) checkDue(e *entry, now time.Time) bool {
	return (b.confirmed != nil && !b.confirmed()) ||
		(b.revalidate > 0 && now.UnixNano() >= e.checked.Load()+int64(b.revalidate))
}

// recheck: while the install-change listener cannot confirm it is alive,
// this replica may have missed an uninstall or new credentials committed
// elsewhere, so before serving a cached token it reads the credential's
// row; so it does every Revalidate, when every caller past it waits for one
// shared read. A change drops the cached tokens.
func (b *Broker) recheck(ctx context.Context, f fetchReq, e *entry, now time.Time) error {
	if b.confirmed != nil && !b.confirmed() {
		return b.check(ctx, f, e)
	}
	if b.revalidate == 0 || now.UnixNano() < e.checked.Load()+int64(b.revalidate) {
		return nil
	}
	ch := b.checks.DoChan(f.key, func() (any, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.fetchTimeout)
		defer cancel()
		return nil, b.check(cctx, f, e)
	})
	select {
	case <-ctx.Done():
		return fmt.Errorf("token: checking the cached token: %w", ctx.Err())
	case res := <-ch:
		return res.Err
	}
}

// check reads e's credential row: a change drops the credential's cached
// tokens, else e counts as checked now.
func (b *Broker) check(ctx context.Context, f fetchReq, e *entry) error {
	ok, err := b.kind.current(ctx, f, e)
	if err != nil {
		b.dropOnDefiniteError(f, err)
		return err
	}
	if !ok {
		b.cache.invalidate(f.install)
		return nil
	}
	e.checked.Store(b.now().UnixNano())
	return nil
}

// Invalidate drops every cached token of the install, whatever its scopes,
// and makes any fetch for it that is in flight discard its result and start
// over with freshly read credentials.
func (b *Broker) Invalidate(irisAppID, accountID string) {
	b.cache.invalidate(irisAppID + "\x00" + accountID)
}

// InvalidateAll drops every cached token and restarts every fetch in flight.
func (b *Broker) InvalidateAll() {
	b.cache.invalidateAll()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type nopObserver struct{}

func (nopObserver) CacheHit(string)                            {}
func (nopObserver) CacheMiss(string)                           {}
func (nopObserver) RefreshAhead(string)                        {}
func (nopObserver) UpstreamCall(string, string, time.Duration) {}
