package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/api"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/metrics"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
)

// App is the app id every broker the rig starts allows.
const App = "@irisx/bench-app"

// DefaultScopes are the DEFAULT_SCOPES of every broker the rig starts.
const DefaultScopes = "asset.view account.view"

// NewKeys returns a fresh ENCRYPTION_KEYS value with one key, "bench1".
func NewKeys() (string, error) { return crypto.GenerateKey("bench1") }

// BrokerEnv is the environment of a child broker on dbURL that trusts the
// simulator at jwksURL and mints tokens at authURL.
func BrokerEnv(dbURL, keys, jwksURL, authURL string) map[string]string {
	return map[string]string{
		"DATABASE_URL":        dbURL,
		"ENCRYPTION_KEYS":     keys,
		"INTERNAL_API_TOKENS": InternalToken,
		"ADMIN_API_TOKENS":    AdminToken,
		"TRACKUNIT_JWKS_URL":  jwksURL,
		"TRACKUNIT_AUTH_URL":  authURL,
		"ALLOWED_APP_IDS":     App,
		"DEFAULT_SCOPES":      DefaultScopes,
		"LOG_FORMAT":          "json",
	}
}

// ServiceConfig configures an in-process service: the same packages wired
// the way `irisx-broker serve` wires them, with the clocks and timings a
// drill needs to control. Zero values take serve's defaults.
type ServiceConfig struct {
	DatabaseURL string
	Keys        string // ENCRYPTION_KEYS
	JWKSURL     string
	AuthURL     string
	// Issuer and Audience are IDENTITY_ISSUER and IDENTITY_AUDIENCE.
	Issuer, Audience string
	// Now is the clock of the verifier and the token broker (default
	// time.Now); share it with the simulator.
	Now func() time.Time
	// RefreshMargin is TOKEN_REFRESH_MARGIN (default 5m).
	RefreshMargin time.Duration
	// TokenSleep replaces the broker's waits between upstream attempts.
	TokenSleep func(ctx context.Context, d time.Duration) error
	// UnknownKIDCooldown is the verifier's refetch cooldown (default 30 s).
	UnknownKIDCooldown time.Duration
	// Logger receives the service's logs (default: discarded).
	Logger *slog.Logger
}

// Service is an in-process broker.
type Service struct {
	PublicURL, InternalURL string
	Store                  *store.Store
	Pool                   *pgxpool.Pool
	Verifier               *identity.Verifier
	Broker                 *token.Broker
	Metrics                *metrics.Metrics

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	servers   []*http.Server
	listening atomic.Bool
}

// StartService starts an in-process broker on loopback ports; it does not
// migrate (drills use databases cloned from a migrated template). Stop it
// with Close.
func StartService(cfg ServiceConfig) (*Service, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	keys, err := crypto.ParseKeyring(cfg.Keys)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{cancel: cancel}
	fail := func(err error) (*Service, error) { s.Close(); return nil, err }

	if s.Pool, err = store.Open(ctx, cfg.DatabaseURL); err != nil {
		return fail(err)
	}
	s.Store = store.New(s.Pool, keys, store.WithLogger(log))
	s.Metrics = metrics.New()
	s.Verifier, err = identity.New(identity.Config{
		JWKSURL: cfg.JWKSURL, Issuer: cfg.Issuer, Audience: cfg.Audience, Leeway: 60 * time.Second, MaxAge: identity.DefaultMaxAge,
		UnknownKIDCooldown: cfg.UnknownKIDCooldown, Now: cfg.Now, Logger: log, Observer: s.Metrics,
	})
	if err != nil {
		return fail(err)
	}
	s.Broker, err = token.New(token.Config{
		AuthURL: cfg.AuthURL, DefaultScopes: []string{"asset.view", "account.view"},
		RefreshMargin: cfg.RefreshMargin, HTTPClient: &http.Client{Timeout: 10 * time.Second},
		Now: cfg.Now, Sleep: cfg.TokenSleep, Logger: log, Observer: s.Metrics,
	}, s.Store)
	if err != nil {
		return fail(err)
	}
	public := api.NewPublic(api.PublicDeps{
		Verifier: s.Verifier, Store: s.Store, AllowedApps: []string{App}, Now: cfg.Now,
		Logger: log, Observer: s.Metrics, HTTP: s.Metrics.HTTP("public"),
	})
	internal := api.NewInternal(api.InternalDeps{
		Verifier: s.Verifier, Store: s.Store, Broker: s.Broker, Metrics: s.Metrics.Handler(),
		InternalTokens: []crypto.Secret{InternalToken}, AdminTokens: []crypto.Secret{AdminToken},
		AllowedApps: []string{App}, Logger: log, HTTP: s.Metrics.HTTP("internal"),
	})

	s.background(func() { s.Verifier.Run(ctx) })
	s.background(func() { s.Broker.Run(ctx) })
	s.background(func() {
		_ = s.Store.Listen(ctx, s.Broker.Invalidate, func() { s.Broker.InvalidateAll(); s.listening.Store(true) })
	})
	if s.PublicURL, err = s.serve(public, false); err != nil {
		return fail(err)
	}
	if s.InternalURL, err = s.serve(internal, true); err != nil {
		return fail(err)
	}
	return s, nil
}

func (s *Service) background(fn func()) {
	s.wg.Add(1)
	go func() { defer s.wg.Done(); fn() }()
}

// serve starts one listener with serve's server settings.
func (s *Service) serve(h http.Handler, h2c bool) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("harness: listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
	if h2c {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = &p
	}
	s.servers = append(s.servers, srv)
	s.background(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(fmt.Sprintf("harness: service listener: %v", err))
		}
	})
	return "http://" + ln.Addr().String(), nil
}

// WaitReady waits until the verifier has loaded a key set and the
// install-change listener has connected (its first connect flushes the
// token cache), as serve's /readyz does.
func (s *Service) WaitReady(ctx context.Context) error {
	for !s.Verifier.Ready() || !s.listening.Load() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: JWKS never loaded or listener never connected: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// Close stops the listeners and the background work and closes the pool.
func (s *Service) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range s.servers {
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}
	s.cancel()
	s.wg.Wait()
	if s.Pool != nil {
		s.Pool.Close()
	}
}
