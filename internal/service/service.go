// Package service is the one assembly of irisx-broker: it builds the store,
// the verifier, the token brokers, the metrics and both HTTP servers from a
// configuration and a few injectable dependencies, and runs them. `serve`,
// `dev`, the bench harness, the drills and the api tests all start the
// service through New and Run; nothing else wires these packages together.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/irisx-broker/irisx-broker/api"
	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/events"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/internal/kms"
	"github.com/irisx-broker/irisx-broker/internal/outbound"
	"github.com/irisx-broker/irisx-broker/internal/telemetry"
	"github.com/irisx-broker/irisx-broker/metrics"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
)

// ShutdownTimeout is how long in-flight requests get once the listeners
// have stopped accepting, after the drain.
const ShutdownTimeout = 30 * time.Second

// MaxFetches bounds the detached upstream token fetches in flight across
// every credential kind; past it a fetch fails at once as unavailable.
const MaxFetches = 512

// Deps are what the service takes besides its configuration. The zero
// value is production: the wall clock, outbound clients that never follow
// redirects, logs discarded.
type Deps struct {
	// Now is the clock of the verifier and the token brokers.
	Now func() time.Time
	// TokenHTTP calls Trackunit's token endpoints; it is made
	// redirect-proof whatever it is (default outbound.New).
	TokenHTTP *http.Client
	// JWKSHTTP fetches the JWKS; likewise made redirect-proof.
	JWKSHTTP *http.Client
	// Logger receives every log (default: discarded).
	Logger *slog.Logger
	// Migrate applies pending migrations (over DatabaseDirectURL) in New.
	Migrate bool
	// OnListening, if set, is told the bound addresses once both servers
	// accept connections.
	OnListening func(public, internal string)
	// TokenSleep replaces the token brokers' waits between upstream
	// attempts (tests).
	TokenSleep func(ctx context.Context, d time.Duration) error
	// IrisTransport replaces the IRIS API proxy's transport (tests).
	IrisTransport http.RoundTripper
	// UnknownKIDCooldown is the verifier's refetch cooldown (tests).
	UnknownKIDCooldown time.Duration
	// TracerProvider, if set, receives every span (tests inject an SDK
	// provider with an in-memory exporter); the caller shuts it down. When
	// nil, New builds one from the OTEL_* variables read through Lookup
	// (telemetry.Setup: off unless OTEL_EXPORTER_OTLP_ENDPOINT or
	// OTEL_TRACES_EXPORTER is set) and Run flushes it at the end.
	TracerProvider trace.TracerProvider
	// Lookup reads the OTEL_* variables (default os.LookupEnv).
	Lookup func(string) (string, bool)
	// TraceOutput is where OTEL_TRACES_EXPORTER=console writes its spans
	// (default os.Stdout).
	TraceOutput io.Writer
}

// Service is one running broker process.
type Service struct {
	cfg *config.Config
	log *slog.Logger
	on  func(public, internal string)

	Pool     *pgxpool.Pool
	Store    *store.Store
	Verifier *identity.Verifier
	// Installs serves install tokens, APIUsers API-user tokens.
	Installs *token.Broker
	APIUsers *token.APIUserTokens
	APIKeys  *token.APIKeyTokens
	Metrics  *metrics.Metrics

	public, internal     *http.Server
	publicLn, internalLn net.Listener

	profiles    *api.ProfileRecorder
	events      *events.Deliverer
	eventStream *events.Stream

	tracer         trace.TracerProvider
	shutdownTracer func(context.Context) error

	listening atomic.Bool
	draining  atomic.Bool
	runOnce   sync.Once
}

// New builds the service and binds both listeners; it serves nothing until
// Run. On error everything it opened is closed.
func New(ctx context.Context, cfg *config.Config, d Deps) (_ *Service, err error) {
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, w := range cfg.Warnings {
		log.Warn("configuration", "warning", w)
	}
	s := &Service{cfg: cfg, on: d.OnListening}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.tracer = d.TracerProvider; s.tracer == nil {
		lookup := d.Lookup
		if lookup == nil {
			lookup = os.LookupEnv
		}
		var opts []telemetry.Option
		if d.TraceOutput != nil {
			opts = append(opts, telemetry.WithConsoleWriter(d.TraceOutput))
		}
		if s.tracer, s.shutdownTracer, err = telemetry.Setup(ctx, lookup, opts...); err != nil {
			return nil, err
		}
	}
	// With tracing off (the no-op provider) nothing below is wired: no
	// interceptor, middleware, transport, pgx tracer or span runs on a
	// request. tp is nil then.
	var tp trace.TracerProvider
	if telemetry.On(s.tracer) {
		tp = s.tracer
		// A line logged with a request's context carries its trace_id.
		log = slog.New(telemetry.LogHandler(log.Handler()))
	}
	s.log = log
	if cfg.Keyring == nil {
		// KMS_KEY_URL: the data keys are unwrapped once, here, never per row.
		if cfg.Keyring, err = kms.ResolveKeyring(ctx, cfg.KMSKeyURL, cfg.WrappedKeys, cfg.Keyring); err != nil {
			return nil, err
		}
	}
	directURL := cfg.DatabaseDirectURL
	if directURL.IsZero() {
		directURL = cfg.DatabaseURL
	}
	if d.Migrate {
		if err := Migrate(ctx, directURL.Reveal(), log); err != nil {
			return nil, err
		}
	}
	poolURL := cfg.DatabaseURL.Reveal()
	if directURL == cfg.DatabaseURL {
		// DATABASE_URL is Postgres itself (the contract: DATABASE_DIRECT_URL
		// is set when it goes through a transaction pooler). Behind a
		// pooler a session setting in the startup packet is refused by
		// PgBouncer, and there the role's own statement_timeout applies
		// (docs/DEPLOY.md); and only a direct pool may keep prepared
		// statements (store.PoolConfig).
		poolURL = withDirectDefaults(poolURL)
	}
	var configurePool func(*pgxpool.Config)
	if tp != nil {
		pgxTracer := telemetry.PgxTracer(tp)
		configurePool = func(c *pgxpool.Config) { telemetry.InstrumentPool(c, pgxTracer) }
	}
	if s.Pool, err = store.OpenWith(ctx, poolURL, configurePool); err != nil {
		return nil, fmt.Errorf("opening the database: %w", err)
	}
	s.Metrics = metrics.New()
	eventMetrics := s.Metrics.RegisterEvents()
	opts := []store.Option{store.WithLogger(log), store.WithEventObserver(eventMetrics.EventWritten)}
	if directURL != cfg.DatabaseURL {
		opts = append(opts, store.WithListenURL(directURL.Reveal()))
	}
	s.Store = store.New(s.Pool, cfg.Keyring, opts...)
	if err := checkKeyIDs(ctx, s.Store, cfg); err != nil { // the pool's first connection
		return nil, poolerHint(err, directURL == cfg.DatabaseURL)
	}

	if cfg.EventRetention == 0 { // hand-built configs (bench, drills): the contract's default
		cfg.EventRetention = 168 * time.Hour
	}
	var eventDeps *api.EventsDeps
	if s.events, eventDeps, s.eventStream, err = newEvents(cfg, directURL.Reveal(), s.Pool, s.Store, eventMetrics, log); err != nil {
		return nil, err
	}
	m := s.Metrics
	s.Verifier, err = identity.New(identity.Config{
		JWKSURL: cfg.JWKSURL, Issuer: cfg.IdentityIssuer, Audience: cfg.IdentityAudience,
		Leeway: cfg.IdentityLeeway, MaxAge: cfg.IdentityMaxAge, UnknownKIDCooldown: d.UnknownKIDCooldown,
		Now: d.Now, Logger: log, Observer: m, HTTPClient: outbound.NoRedirects(d.JWKSHTTP),
		TracerProvider: tp,
	})
	if err != nil {
		return nil, err
	}
	m.RegisterInstallCounts(func(ctx context.Context) (map[string]int64, error) {
		counts, err := s.Store.InstallCounts(ctx)
		out := make(map[string]int64, len(counts))
		for status, n := range counts {
			out[string(status)] = n
		}
		return out, err
	})
	m.RegisterGaugeFunc("irisx_jwks_keyset_age_seconds", "Seconds since the JWKS was last fetched successfully.",
		func() float64 { return s.Verifier.KeySetAge().Seconds() })

	// The one outbound client to Trackunit's token endpoints: a client span
	// per call, with traceparent; NoRedirects' CheckRedirect is kept.
	tokenHTTP := outbound.NoRedirects(d.TokenHTTP)
	if tp != nil {
		tokenHTTP.Transport = telemetry.Transport(tokenHTTP.Transport, tp)
	}
	// One cap on detached upstream fetches for every kind together.
	fetches := token.NewLimiter(MaxFetches)
	s.Installs, err = token.New(token.Config{
		AuthURL: cfg.AuthURL, DefaultScopes: cfg.DefaultScopes, RefreshMargin: cfg.TokenRefreshMargin,
		HTTPClient: tokenHTTP, Now: d.Now, Sleep: d.TokenSleep, Logger: log, Observer: m, TracerProvider: tp,
		Fetches: fetches, Confirmed: s.Store.ListenerConfirmed,
	}, s.Store)
	if err != nil {
		return nil, err
	}
	s.APIUsers, err = token.NewAPIUsers(token.Config{
		AuthURL: cfg.AuthURL, RefreshMargin: cfg.TokenRefreshMargin,
		HTTPClient: tokenHTTP, Now: d.Now, Sleep: d.TokenSleep, Logger: log, Observer: m, TracerProvider: tp,
		Fetches: fetches,
	}, s.Store)
	if err != nil {
		return nil, err
	}
	s.APIKeys, err = token.NewAPIKeys(token.Config{
		AuthURL: cfg.AuthURL, RefreshMargin: cfg.TokenRefreshMargin,
		HTTPClient: tokenHTTP, Now: d.Now, Sleep: d.TokenSleep, Logger: log, Observer: m, TracerProvider: tp,
		Fetches: fetches, Confirmed: s.Store.ListenerConfirmed,
	}, s.Store)
	if err != nil {
		return nil, err
	}
	// A replica that answered a callback 200 drops the install's tokens
	// before answering (read your writes), not only when NOTIFY comes back.
	s.Store.OnInstallChanged(s.Installs.Invalidate)

	// /readyz is 503 until the listener has connected and while the
	// service drains.
	ready := func() bool { return s.listening.Load() && !s.draining.Load() }
	s.profiles = api.NewProfileRecorder(s.Store, log, d.Now)
	var proxy *api.ProxyDeps
	if cfg.IrisAPIURL != "" { // config.Load always sets it; hand-built configs may not
		proxy = &api.ProxyDeps{Tokens: api.BrokerProxyTokens(s.Installs), Holds: s.Store,
			UpstreamURL: cfg.IrisAPIURL, Observer: m.NewProxy(), Transport: d.IrisTransport}
	}
	var connectTracing []connect.Interceptor
	if tp != nil {
		ic, err := telemetry.ConnectInterceptor(tp)
		if err != nil {
			return nil, err
		}
		connectTracing = append(connectTracing, ic)
	}
	publicHandler := api.NewPublic(api.PublicDeps{
		Verifier: s.Verifier, Store: s.Store, AllowedApps: cfg.AllowedAppIDs, Now: d.Now,
		Logger: log, Observer: m, HTTP: m.HTTP("public"), Listening: ready, Profiles: s.profiles,
	})
	internalHandler := api.NewInternal(api.InternalDeps{
		Verifier: s.Verifier, Store: s.Store, Broker: s.Installs, Metrics: m.Handler(),
		InternalTokens: cfg.InternalAPITokens, AdminTokens: cfg.AdminAPITokens,
		AllowedApps: cfg.AllowedAppIDs, Logger: log, HTTP: m.HTTP("internal"),
		APIUsers: s.Store, APIUserBroker: s.APIUsers, APIKeys: s.Store, APIKeyBroker: s.APIKeys,
		Listening: ready, Profiles: s.Store, Proxy: proxy, Events: eventDeps,
		ConnectInterceptors: connectTracing,
	})
	// The public listener: a server span for /appinstall only, a new root
	// (Trackunit is outside), around the request logger so its line has the
	// trace_id. The internal listener's spans are the Connect calls'
	// (child of the caller's span); LogSlot gives its request logger theirs.
	var public, internal http.Handler = publicHandler, internalHandler
	if tp != nil {
		public, internal = telemetry.Middleware(publicHandler, tp, "/appinstall"), telemetry.LogSlot(internalHandler)
	}
	s.public = api.NewServer(public, false)
	s.internal = api.NewServer(internal, true)

	if s.publicLn, err = net.Listen("tcp", cfg.PublicAddr); err != nil {
		return nil, fmt.Errorf("PUBLIC_ADDR: %w", err)
	}
	if s.internalLn, err = net.Listen("tcp", cfg.InternalAddr); err != nil {
		return nil, fmt.Errorf("INTERNAL_ADDR: %w", err)
	}
	return s, nil
}

// changed drops what this replica caches of a changed install or API key.
func (s *Service) changed(irisAppID, accountID string) {
	if irisAppID == store.APIKeyNotifyApp {
		s.APIKeys.Invalidate(accountID)
		return
	}
	s.Installs.Invalidate(irisAppID, accountID)
}

// PublicHandler and InternalHandler are the listeners' handlers, for
// tests that call them in process.
func (s *Service) PublicHandler() http.Handler   { return s.public.Handler }
func (s *Service) InternalHandler() http.Handler { return s.internal.Handler }

// PublicAddr and InternalAddr are the bound listener addresses.
func (s *Service) PublicAddr() string   { return s.publicLn.Addr().String() }
func (s *Service) InternalAddr() string { return s.internalLn.Addr().String() }

// Ready reports what /readyz's listener check does: the install-change
// listener is connected and the service is not draining.
func (s *Service) Ready() bool { return s.listening.Load() && !s.draining.Load() }

// Draining reports whether shutdown has begun.
func (s *Service) Draining() bool { return s.draining.Load() }

// Run serves until ctx ends, then shuts down: /readyz answers 503 for
// cfg.ShutdownDrain while requests are still served (load balancers take the
// replica out), then the listeners stop accepting and in-flight requests get
// up to ShutdownTimeout; the background work (JWKS refresh, token results,
// the install-change listener) stops after the last request, and the pool
// is closed. Run may be called once.
func (s *Service) Run(ctx context.Context) error {
	err := errors.New("service: Run called twice")
	s.runOnce.Do(func() { err = s.run(ctx) })
	return err
}

func (s *Service) run(ctx context.Context) error {
	defer s.close()
	log := s.log
	// Background work outlives ctx until the servers are done with it.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	var bgWG sync.WaitGroup
	bgErr := make(chan error, 1)
	goBG := func(fn func()) {
		bgWG.Add(1)
		go func() { defer bgWG.Done(); fn() }()
	}
	goBG(func() { s.Verifier.Run(bg) })
	goBG(func() { s.Installs.Run(bg) })
	goBG(func() { s.profiles.Run(bg) })
	goBG(func() { s.eventStream.Run(bg) })
	if err := s.events.Start(bg); err != nil {
		stopBG()
		bgWG.Wait()
		return fmt.Errorf("starting event delivery: %w", err)
	}
	goBG(func() {
		err := s.Store.Listen(bg, s.changed, func() {
			s.Installs.InvalidateAll()
			s.APIKeys.InvalidateAll()
			s.listening.Store(true)
		}, func(error) { s.listening.Store(false) })
		if err != nil && bg.Err() == nil {
			bgErr <- fmt.Errorf("listening for install changes: %w", err)
		}
	})

	log.Info("listening", "public_addr", s.PublicAddr(), "internal_addr", s.InternalAddr())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveUntil(gctx, s.public, s.publicLn) })
	g.Go(func() error { return serveUntil(gctx, s.internal, s.internalLn) })
	if s.on != nil {
		s.on(s.PublicAddr(), s.InternalAddr())
	}
	var failed error
	select {
	case <-ctx.Done():
	case failed = <-bgErr:
	case <-gctx.Done():
	}
	if failed == nil && ctx.Err() != nil {
		s.drain(ctx)
	}
	s.draining.Store(true)
	shutdown(s.public, s.internal)
	err := g.Wait()
	stopEvents(s.events, log)
	stopBG()
	bgWG.Wait()
	s.stopTracing()
	log.Info("stopped")
	if failed != nil {
		return failed
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// drain turns /readyz 503 and keeps serving for ShutdownDrain. Responses
// ask clients to close their keep-alive connections meanwhile, so none is
// cut while a request may be on its way.
func (s *Service) drain(ctx context.Context) {
	s.draining.Store(true)
	s.log.Info("draining", "for", s.cfg.ShutdownDrain)
	s.public.SetKeepAlivesEnabled(false)
	s.internal.SetKeepAlivesEnabled(false)
	if s.cfg.ShutdownDrain > 0 {
		t := time.NewTimer(s.cfg.ShutdownDrain)
		<-t.C
	}
	_ = ctx
}

// shutdown stops accepting and waits up to ShutdownTimeout for in-flight
// requests; past that, connections are closed.
func shutdown(servers ...*http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				_ = srv.Close()
			}
		}()
	}
	wg.Wait()
}

// serveUntil serves ln until s is shut down.
func serveUntil(ctx context.Context, s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	_ = ctx
	return nil
}

// stopTracing flushes and stops the tracer provider New built, with a
// deadline of its own; an injected provider is its owner's to stop.
func (s *Service) stopTracing() {
	if s.shutdownTracer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.shutdownTracer(ctx); err != nil {
		s.log.Warn("flushing traces failed", "error", err)
	}
	s.shutdownTracer = nil
}

// close releases what New opened; Run calls it at the end.
func (s *Service) close() {
	for _, ln := range []net.Listener{s.publicLn, s.internalLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if s.Pool != nil {
		s.Pool.Close()
	}
	s.stopTracing()
}

// Close releases a service that was built but never Run.
func (s *Service) Close() { s.runOnce.Do(s.close) }

// StatementTimeout bounds every query of the broker's own pool (each is a
// short statement; none waits on Trackunit), unless DATABASE_URL sets
// statement_timeout itself. Migrations run over DATABASE_DIRECT_URL
// without it.
const StatementTimeout = 10 * time.Second

// withDirectDefaults adds to a postgres:// URL of Postgres itself what it
// does not set: statement_timeout (pgx sends unknown URL parameters as
// session settings), and default_query_exec_mode=cache_statement, so that
// each connection prepares a statement once and Postgres does not parse
// and plan it again at every call (River's job statements above all; the
// events phase of make bench measured the write path's Postgres CPU per
// callback halved). A URL that does not parse is passed on for store.Open
// to refuse.
func withDirectDefaults(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return raw
	}
	q := u.Query()
	if !q.Has("statement_timeout") {
		q.Set("statement_timeout", strconv.FormatInt(StatementTimeout.Milliseconds(), 10))
	}
	if !q.Has("default_query_exec_mode") {
		q.Set("default_query_exec_mode", "cache_statement")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// checkKeyIDs refuses to start when stored ciphertexts use key ids the
// keyring lacks: those secrets could not be decrypted, and the operator
// must hear it now, not at the first token request.
func checkKeyIDs(ctx context.Context, st *store.Store, cfg *config.Config) error {
	// Listing the key ids walks an index, one step per key id; only when
	// one is missing are the ciphertexts counted (a scan), for the message.
	ids, err := st.KeyIDs(ctx)
	if err != nil {
		return fmt.Errorf("listing the key ids of stored ciphertexts: %w", err)
	}
	if !slices.ContainsFunc(ids, func(id string) bool { return !cfg.Keyring.Has(id) }) {
		return nil
	}
	counts, err := st.KeyIDCounts(ctx)
	if err != nil {
		return fmt.Errorf("counting stored ciphertexts by key id: %w", err)
	}
	var missing []string
	for id, n := range counts {
		if !cfg.Keyring.Has(id) {
			missing = append(missing, fmt.Sprintf("%s (%d)", id, n))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	return fmt.Errorf("ENCRYPTION_KEYS lacks key ids used by stored secrets: %s; add them back (as non-primary keys) or re-encrypt", strings.Join(missing, ", "))
}

// Migrate applies pending migrations over the direct URL, under a lock
// that serializes concurrent starts; it logs while it waits for another
// start's lock and ends when ctx does. A schema newer than this binary is a
// warning, not an error: migrations are expand-then-contract, so an older
// binary serves during a rolling deploy or a rollback.
func Migrate(ctx context.Context, directURL string, log *slog.Logger) error {
	res, err := store.Migrate(ctx, directURL, log)
	if err != nil {
		return fmt.Errorf("applying migrations: %w", err)
	}
	switch {
	case res.Newer():
		log.Warn("the database schema is newer than this binary; serving on it (migrations are expand-then-contract)",
			"schema_version", res.From, "binary_latest_migration", res.Latest)
	case res.Applied() > 0:
		log.Info("migrations applied", "from_version", res.From, "to_version", res.To, "lock_wait", res.LockWait)
	}
	return nil
}
