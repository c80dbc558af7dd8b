package harness

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/internal/service"
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

// Service is an in-process broker: internal/service, the assembly serve
// runs, on loopback ports.
type Service struct {
	PublicURL, InternalURL string
	*service.Service

	cancel context.CancelFunc
	done   chan error
}

// StartService starts an in-process broker on loopback ports; it does not
// migrate (drills use databases cloned from a migrated template). Stop it
// with Close.
func StartService(cfg ServiceConfig) (*Service, error) {
	keys, err := crypto.ParseKeyring(cfg.Keys)
	if err != nil {
		return nil, err
	}
	scopes := strings.Fields(DefaultScopes)
	margin := cfg.RefreshMargin
	if margin == 0 {
		margin = 5 * time.Minute
	}
	c := &config.Config{
		DatabaseURL: crypto.Secret(cfg.DatabaseURL), DatabaseDirectURL: crypto.Secret(cfg.DatabaseURL),
		PublicAddr: "127.0.0.1:0", InternalAddr: "127.0.0.1:0", Keyring: keys,
		InternalAPITokens: []crypto.Secret{InternalToken}, AdminAPITokens: []crypto.Secret{AdminToken},
		JWKSURL: cfg.JWKSURL, AuthURL: cfg.AuthURL, IdentityIssuer: cfg.Issuer, IdentityAudience: cfg.Audience,
		IdentityLeeway: 60 * time.Second, IdentityMaxAge: identity.DefaultMaxAge,
		AllowedAppIDs: []string{App}, DefaultScopes: scopes, TokenRefreshMargin: margin,
	}
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := service.New(ctx, c, service.Deps{
		Now: cfg.Now, Logger: cfg.Logger, TokenSleep: cfg.TokenSleep, UnknownKIDCooldown: cfg.UnknownKIDCooldown,
		TokenHTTP: &http.Client{Timeout: 10 * time.Second},
	})
	if err != nil {
		cancel()
		return nil, err
	}
	s := &Service{Service: svc, cancel: cancel, done: make(chan error, 1),
		PublicURL: "http://" + svc.PublicAddr(), InternalURL: "http://" + svc.InternalAddr()}
	go func() { s.done <- svc.Run(ctx) }()
	return s, nil
}

// WaitReady waits until the verifier has loaded a key set and the
// install-change listener has connected (its first connect flushes the
// token cache), as serve's /readyz does.
func (s *Service) WaitReady(ctx context.Context) error {
	for !s.Verifier.Ready() || !s.Service.Ready() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: JWKS never loaded or listener never connected: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// Close stops the service (no drain: ShutdownDrain is zero) and waits for it.
func (s *Service) Close() {
	s.cancel()
	<-s.done
}
