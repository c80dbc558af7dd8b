package identity

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Defaults applied by New to zero Config fields; they are the contract's.
const (
	// DefaultRefreshInterval is the period of the background JWKS refresh.
	DefaultRefreshInterval = 15 * time.Minute
	// DefaultUnknownKIDCooldown is the least time between on-demand refetches.
	DefaultUnknownKIDCooldown = 30 * time.Second
	// DefaultFetchTimeout bounds one JWKS fetch.
	DefaultFetchTimeout = 5 * time.Second
	// DefaultMaxJWKSBytes caps the JWKS response body (1 MiB).
	DefaultMaxJWKSBytes = 1 << 20
	// DefaultMaxAge is the oldest iat accepted (IDENTITY_MAX_AGE's default).
	DefaultMaxAge = 10 * time.Minute
)

// MaxTokenBytes is the longest token accepted (not counting a "Bearer "
// prefix); longer input is refused before it is looked at.
const MaxTokenBytes = 8 << 10

// Config configures a Verifier. Zero durations and sizes take the defaults
// above; Leeway has no default because zero skew is a legitimate choice.
type Config struct {
	// JWKSURL is where the signing keys are fetched from (http or https).
	JWKSURL string
	// Issuer, when not empty, must equal the token's iss.
	Issuer string
	// Audience, when not empty, must be the token's aud or one of its entries.
	Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway time.Duration
	// MaxAge refuses tokens whose iat is older than this (Leeway does not
	// extend it); zero means DefaultMaxAge.
	MaxAge time.Duration
	// RefreshInterval is the period of the background JWKS refresh.
	RefreshInterval time.Duration
	// UnknownKIDCooldown is the least time between two refetches triggered
	// by an unknown kid (or by a Verify while no key set is loaded).
	UnknownKIDCooldown time.Duration
	// FetchTimeout bounds each JWKS fetch.
	FetchTimeout time.Duration
	// MaxJWKSBytes caps the JWKS response body; a bigger body is a failed fetch.
	MaxJWKSBytes int64
	// HTTPClient fetches the JWKS; nil builds one with a time-out.
	HTTPClient *http.Client
	// Now is the clock for claim checks, the cooldown and KeySetAge.
	Now func() time.Time
	// Logger receives fetch outcomes; nil discards.
	Logger *slog.Logger
	// Observer receives metric events; nil ignores them.
	Observer Observer
	// TracerProvider, if set, gets one span per verification
	// (identity.Verify), with the outcome only: no part of the token.
	TracerProvider trace.TracerProvider
}

// Observer receives events for metrics. Implementations must be cheap and
// safe for concurrent use: Rejected is called on the request path.
type Observer interface {
	// JWKSFetched reports one fetch; outcome is "ok" or "error", keys is the
	// number of usable keys loaded (0 on error).
	JWKSFetched(outcome string, keys int)
	// Rejected reports one rejected token; reason is a Reason constant.
	Rejected(reason string)
}

// Outcomes passed to Observer.JWKSFetched.
const (
	FetchOK    = "ok"
	FetchError = "error"
)

type nopObserver struct{}

func (nopObserver) JWKSFetched(string, int) {}
func (nopObserver) Rejected(string)         {}

// withDefaults validates cfg and fills in its defaults, reporting every
// problem at once.
func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	if u, err := url.Parse(cfg.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, errors.New("JWKSURL must be an absolute http or https URL"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"Leeway", cfg.Leeway},
		{"MaxAge", cfg.MaxAge},
		{"RefreshInterval", cfg.RefreshInterval},
		{"UnknownKIDCooldown", cfg.UnknownKIDCooldown},
		{"FetchTimeout", cfg.FetchTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", d.name))
		}
	}
	if cfg.MaxJWKSBytes < 0 {
		errs = append(errs, errors.New("MaxJWKSBytes must not be negative"))
	}
	if len(errs) > 0 {
		return cfg, fmt.Errorf("identity: invalid config: %w", errors.Join(errs...))
	}

	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.UnknownKIDCooldown == 0 {
		cfg.UnknownKIDCooldown = DefaultUnknownKIDCooldown
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.MaxJWKSBytes == 0 {
		cfg.MaxJWKSBytes = DefaultMaxJWKSBytes
	}
	if cfg.HTTPClient == nil {
		// The per-fetch context already carries FetchTimeout; the client
		// time-out is a second fence should a caller pass a context-less path.
		cfg.HTTPClient = &http.Client{Timeout: cfg.FetchTimeout}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return cfg, nil
}
