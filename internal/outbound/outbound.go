// Package outbound builds the service's outbound HTTP clients. Every client
// the broker uses to call out (Trackunit's token endpoints, the JWKS, the
// IRIS API proxy, webhook receivers) comes from New, so none can follow a
// redirect: a 3xx is handed back to the caller as the answer, and nothing
// (no client secret in a form body, no password) is ever sent to the
// redirect's target.
package outbound

import (
	"net/http"
	"time"
)

// Options shape a client. The zero value is usable.
type Options struct {
	// Timeout bounds a whole exchange; zero means 10 s.
	Timeout time.Duration
	// Transport replaces the default transport (tests, instrumentation).
	Transport http.RoundTripper
	// MaxConnsPerHost bounds the connections to one host; zero means 64.
	MaxConnsPerHost int
}

// DefaultTimeout is the time-out of a client built with a zero Timeout.
const DefaultTimeout = 10 * time.Second

// New returns a client that never follows redirects.
func New(o Options) *http.Client {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	rt := o.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxConnsPerHost = o.MaxConnsPerHost
		if t.MaxConnsPerHost == 0 {
			t.MaxConnsPerHost = 64
		}
		t.MaxIdleConnsPerHost = t.MaxConnsPerHost
		rt = t
	}
	return &http.Client{Timeout: o.Timeout, Transport: rt, CheckRedirect: noRedirect}
}

// NoRedirects returns a copy of c that does not follow redirects, for
// clients injected by tests or dev mode.
func NoRedirects(c *http.Client) *http.Client {
	if c == nil {
		return New(Options{})
	}
	cp := *c
	cp.CheckRedirect = noRedirect
	return &cp
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
