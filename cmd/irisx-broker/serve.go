package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/irisx-broker/irisx-broker/api"
	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/metrics"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
)

// shutdownTimeout is the fresh deadline in-flight requests get after SIGTERM.
const shutdownTimeout = 15 * time.Second

// outboundTimeout bounds every call to Trackunit.
const outboundTimeout = 10 * time.Second

func runServe(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	migrate := fs.Bool("migrate", true, "apply pending migrations at start")
	if err := fs.Parse(args); err != nil {
		return errReported
	}
	cfg, err := config.Load(ctx, lookup, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errReported
	}
	logger := newLogger(cfg, stderr)
	return serve(ctx, cfg, serveOptions{migrate: *migrate, logger: logger})
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// serveOptions are what serve takes besides the configuration.
type serveOptions struct {
	migrate bool
	logger  *slog.Logger
	// onListening, if set, is told the bound addresses once both listeners
	// accept connections (tests bind port 0; dev prints ready commands).
	onListening func(public, internal string)
	// verifierHTTP and authHTTP replace the outbound clients (dev, tests).
	verifierHTTP *http.Client
	authHTTP     *http.Client
}

// serve runs the service until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, cfg *config.Config, o serveOptions) error {
	log := o.logger
	for _, w := range cfg.Warnings {
		log.Warn("configuration", "warning", w)
	}
	dbURL := cfg.DatabaseURL.Reveal()
	if o.migrate {
		if err := store.MigrateUp(dbURL); err != nil {
			return fmt.Errorf("applying migrations: %w", err)
		}
	}
	pool, err := store.Open(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("opening the database: %w", err)
	}
	defer pool.Close()
	m := metrics.New()
	eventMetrics := m.RegisterEvents()
	st := store.New(pool, cfg.Keyring, store.WithEventObserver(eventMetrics.EventWritten))
	if err := checkKeyIDs(ctx, st, cfg); err != nil {
		return err
	}
	deliverer, eventDeps, stream, err := newEvents(cfg, pool, st, eventMetrics, log)
	if err != nil {
		return err
	}
	verifier, err := identity.New(identity.Config{
		JWKSURL:    cfg.JWKSURL,
		Issuer:     cfg.IdentityIssuer,
		Audience:   cfg.IdentityAudience,
		Leeway:     cfg.IdentityLeeway,
		MaxAge:     cfg.IdentityMaxAge,
		Logger:     log,
		Observer:   m,
		HTTPClient: o.verifierHTTP,
	})
	if err != nil {
		return err
	}
	m.RegisterInstallCounts(func(ctx context.Context) (map[string]int64, error) {
		counts, err := st.InstallCounts(ctx)
		out := make(map[string]int64, len(counts))
		for status, n := range counts {
			out[string(status)] = n
		}
		return out, err
	})
	m.RegisterGaugeFunc("irisx_jwks_keyset_age_seconds", "Seconds since the JWKS was last fetched successfully.",
		func() float64 { return verifier.KeySetAge().Seconds() })
	authHTTP := o.authHTTP
	if authHTTP == nil {
		authHTTP = &http.Client{Timeout: outboundTimeout}
	}
	broker, err := token.New(token.Config{
		AuthURL:       cfg.AuthURL,
		DefaultScopes: cfg.DefaultScopes,
		RefreshMargin: cfg.TokenRefreshMargin,
		HTTPClient:    authHTTP,
		Logger:        log,
		Observer:      m,
	}, st)
	if err != nil {
		return err
	}
	apiUsers, err := token.NewAPIUsers(token.APIUsersConfig{
		AuthURL:       cfg.AuthURL,
		RefreshMargin: cfg.TokenRefreshMargin,
		HTTPClient:    authHTTP,
		Logger:        log,
		Observer:      m,
	}, st)
	if err != nil {
		return err
	}

	// Set once the install-change listener has connected and flushed the
	// token cache; /readyz waits for it.
	var listening atomic.Bool
	public := api.NewPublic(api.PublicDeps{
		Verifier: verifier, Store: st, AllowedApps: cfg.AllowedAppIDs,
		Logger: log, Observer: m, HTTP: m.HTTP("public"), Listening: listening.Load,
	})
	internal := api.NewInternal(api.InternalDeps{
		Verifier: verifier, Store: st, Broker: broker, Metrics: m.Handler(),
		InternalTokens: cfg.InternalAPITokens, AdminTokens: cfg.AdminAPITokens,
		AllowedApps: cfg.AllowedAppIDs, Logger: log, HTTP: m.HTTP("internal"),
		APIUsers: st, APIUserBroker: apiUsers, Listening: listening.Load,
		Events: eventDeps,
	})

	publicLn, err := net.Listen("tcp", cfg.PublicAddr)
	if err != nil {
		return fmt.Errorf("PUBLIC_ADDR: %w", err)
	}
	internalLn, err := net.Listen("tcp", cfg.InternalAddr)
	if err != nil {
		publicLn.Close()
		return fmt.Errorf("INTERNAL_ADDR: %w", err)
	}
	log.Info("listening", "public_addr", publicLn.Addr().String(), "internal_addr", internalLn.Addr().String())
	if o.onListening != nil {
		o.onListening(publicLn.Addr().String(), internalLn.Addr().String())
	}

	if err := deliverer.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	defer stopEvents(deliverer, log)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return stream.Run(gctx) })
	g.Go(func() error { verifier.Run(gctx); return nil })
	g.Go(func() error { broker.Run(gctx); return nil })
	g.Go(func() error {
		err := st.Listen(gctx, broker.Invalidate, func() {
			broker.InvalidateAll()
			listening.Store(true)
		})
		if err != nil && gctx.Err() == nil {
			return fmt.Errorf("listening for install changes: %w", err)
		}
		return nil
	})
	g.Go(func() error { return serveHTTP(gctx, newHTTPServer(public, false), publicLn) })
	g.Go(func() error { return serveHTTP(gctx, newHTTPServer(internal, true), internalLn) })
	err = g.Wait()
	log.Info("stopped")
	return err
}

func newHTTPServer(h http.Handler, h2c bool) *http.Server {
	s := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// A token request may wait out upstream retries (3 attempts,
		// Retry-After up to 10 s each) before it can answer.
		WriteTimeout: 60 * time.Second,
		IdleTimeout:  120 * time.Second,
		// Big enough that an oversized Trackunit-Identity header (the
		// verifier refuses anything over 8 KiB) reaches the handler and gets
		// the contract's 401 rather than the server's 431.
		MaxHeaderBytes: 2 << 20,
	}
	if h2c {
		// gRPC clients speak HTTP/2 without TLS on the internal listener.
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		s.Protocols = &p
	}
	return s
}

// serveHTTP serves until ctx ends, then drains in-flight requests with a
// fresh deadline (ctx is already done by then).
func serveHTTP(ctx context.Context, s *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// checkKeyIDs refuses to start when stored ciphertexts use key ids the
// keyring lacks: those secrets could not be decrypted, and the operator
// must hear it now, not at the first token request.
func checkKeyIDs(ctx context.Context, st *store.Store, cfg *config.Config) error {
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
