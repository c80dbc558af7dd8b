package token

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// policy is how every kind calls Trackunit's auth server: the HTTP client,
// the clock, the retry budget and the jitter source.
type policy struct {
	httpClient    *http.Client
	now           func() time.Time
	maxAttempts   int
	maxRetryAfter time.Duration
	baseBackoff   time.Duration
	sleep         func(ctx context.Context, d time.Duration) error
	fetchTimeout  time.Duration
	log           *slog.Logger
	// tracer spans each shared fetch (trace.go); nil: no spans.
	tracer trace.Tracer
	// rand returns a float in [0, 1) for jitter; replaced in tests.
	rand func() float64
}

// policyConfig is the part of a broker's configuration policy is made of;
// zero values take the defaults.
type policyConfig struct {
	HTTPClient    *http.Client
	Now           func() time.Time
	MaxAttempts   int
	MaxRetryAfter time.Duration
	BaseBackoff   time.Duration
	Sleep         func(ctx context.Context, d time.Duration) error
	FetchTimeout  time.Duration
	Logger        *slog.Logger
	Tracer        trace.TracerProvider
}

func newPolicy(c policyConfig) policy {
	p := policy{
		httpClient:    c.HTTPClient,
		now:           c.Now,
		maxAttempts:   orDefault(c.MaxAttempts, 3),
		maxRetryAfter: orDefault(c.MaxRetryAfter, 10*time.Second),
		baseBackoff:   orDefault(c.BaseBackoff, 200*time.Millisecond),
		sleep:         c.Sleep,
		fetchTimeout:  orDefault(c.FetchTimeout, 30*time.Second),
		log:           c.Logger,
		rand:          rand.Float64,
	}
	if p.httpClient == nil {
		p.httpClient = &http.Client{Timeout: 10 * time.Second}
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.sleep == nil {
		p.sleep = sleepCtx
	}
	if c.Tracer != nil {
		p.tracer = c.Tracer.Tracer(tracerName)
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p
}

// backoff is full jitter: uniform in [0, min(cap, base*2^(attempt-1))].
func (p *policy) backoff(attempt int) time.Duration {
	ceil := p.baseBackoff << min(attempt-1, 30)
	if ceil <= 0 || ceil > p.maxRetryAfter {
		ceil = p.maxRetryAfter
	}
	return time.Duration(p.rand() * float64(ceil))
}

// delay is the server's Retry-After (capped) or else the backoff.
func (p *policy) delay(attempt int, uerr *upstreamError) time.Duration {
	if uerr.hasRetryAfter {
		return min(uerr.retryAfter, p.maxRetryAfter)
	}
	return p.backoff(attempt)
}

// validAuthURL reports whether s can be the base of Trackunit's token
// endpoints.
func validAuthURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
