// Package metrics owns the broker's Prometheus metrics. Its observers are
// handed to the packages that see the events (api, identity, token), so
// those packages know nothing of Prometheus. Labels are low-cardinality by
// construction: never an account id, app id, kid or token.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every collector of one process, on its own registry.
type Metrics struct {
	reg *prometheus.Registry

	httpRequests  *prometheus.CounterVec
	httpDuration  *prometheus.HistogramVec
	installEvents *prometheus.CounterVec
	identityFails *prometheus.CounterVec
	jwksFetches   *prometheus.CounterVec
	jwksKeys      prometheus.Gauge
	tokenCache    *prometheus.CounterVec
	upstream      *prometheus.CounterVec
	upstreamDur   *prometheus.HistogramVec

	// cacheSeries holds the token cache's counters resolved per (result,
	// kind): Token calls CacheHit on every cached answer, and resolving
	// labels each time hashes them and allocates.
	cacheSeries sync.Map // cacheKey -> prometheus.Counter
}

type cacheKey struct{ result, kind string }

// New registers every collector on a fresh registry, with the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "irisx_http_requests_total", Help: "HTTP requests by listener, route pattern and status code.",
		}, []string{"listener", "route", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "irisx_http_request_duration_seconds", Help: "HTTP request latency by listener and route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"listener", "route"}),
		installEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "irisx_install_events_total", Help: "Committed install callbacks by event type (INSTALLED, UNINSTALLED, other) and outcome.",
		}, []string{"type", "outcome"}),
		identityFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "irisx_identity_failures_total", Help: "Trackunit-Identity JWTs refused, by reason.",
		}, []string{"reason"}),
		jwksFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "irisx_jwks_fetches_total", Help: "JWKS fetches by outcome.",
		}, []string{"outcome"}),
		jwksKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "irisx_jwks_keys", Help: "Keys in the JWKS currently served.",
		}),
		tokenCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "irisx_token_cache_total", Help: "Token cache lookups by result (hit, miss, refresh_ahead) and credential kind (install, api_key, api_user).",
		}, []string{"result", "kind"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "irisx_upstream_requests_total", Help: "Calls to Trackunit's auth server by endpoint and outcome.",
		}, []string{"endpoint", "outcome"}),
		upstreamDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "irisx_upstream_request_duration_seconds", Help: "Latency of calls to Trackunit's auth server.",
			Buckets: prometheus.DefBuckets,
		}, []string{"endpoint"}),
	}
	m.reg.MustRegister(m.httpRequests, m.httpDuration, m.installEvents, m.identityFails,
		m.jwksFetches, m.jwksKeys, m.tokenCache, m.upstream, m.upstreamDur,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// RegisterGaugeFunc adds a gauge computed at scrape time, e.g. the JWKS age.
func (m *Metrics) RegisterGaugeFunc(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// HTTP returns the request observer of one listener ("public", "internal").
func (m *Metrics) HTTP(listener string) *HTTPObserver {
	return &HTTPObserver{m: m, listener: listener}
}

// HTTPObserver counts requests of one listener. It keeps the series of
// each (route, status) once resolved, so a request costs two atomic adds
// and one map read, not a label hash and allocations per request. Routes
// are the router's patterns and statuses are few, so the map stays small.
type HTTPObserver struct {
	m        *Metrics
	listener string
	series   sync.Map // httpKey -> *httpSeries
}

type httpKey struct {
	route  string
	status int
}

type httpSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// HTTPRequest records one finished request.
func (o *HTTPObserver) HTTPRequest(route, _ string, status int, d time.Duration) {
	k := httpKey{route, status}
	v, ok := o.series.Load(k)
	if !ok {
		v, _ = o.series.LoadOrStore(k, &httpSeries{
			requests: o.m.httpRequests.WithLabelValues(o.listener, route, strconv.Itoa(status)),
			duration: o.m.httpDuration.WithLabelValues(o.listener, route),
		})
	}
	s := v.(*httpSeries)
	s.requests.Inc()
	s.duration.Observe(d.Seconds())
}

// InstallEvent counts a committed install callback.
func (m *Metrics) InstallEvent(eventType, outcome string) {
	m.installEvents.WithLabelValues(eventType, outcome).Inc()
}

// JWKSFetched counts a JWKS fetch and records the key count on success.
func (m *Metrics) JWKSFetched(outcome string, keys int) {
	m.jwksFetches.WithLabelValues(outcome).Inc()
	if outcome == "ok" {
		m.jwksKeys.Set(float64(keys))
	}
}

// Rejected counts an identity JWT refused for reason.
func (m *Metrics) Rejected(reason string) {
	m.identityFails.WithLabelValues(reason).Inc()
}

// CacheHit counts a token served from the cache.
func (m *Metrics) CacheHit(kind string) { m.cacheCounter("hit", kind).Inc() }

// CacheMiss counts a token cache miss of a credential kind.
func (m *Metrics) CacheMiss(kind string) { m.cacheCounter("miss", kind).Inc() }

// RefreshAhead counts a background token refresh of a credential kind.
func (m *Metrics) RefreshAhead(kind string) { m.cacheCounter("refresh_ahead", kind).Inc() }

// cacheCounter is the token cache counter of (result, kind), resolved once.
// Kinds are the token package's three constants.
func (m *Metrics) cacheCounter(result, kind string) prometheus.Counter {
	k := cacheKey{result, kind}
	if c, ok := m.cacheSeries.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c, _ := m.cacheSeries.LoadOrStore(k, m.tokenCache.WithLabelValues(result, kind))
	return c.(prometheus.Counter)
}

// UpstreamCall records one call to an auth server endpoint.
func (m *Metrics) UpstreamCall(endpoint, outcome string, d time.Duration) {
	m.upstream.WithLabelValues(endpoint, outcome).Inc()
	m.upstreamDur.WithLabelValues(endpoint).Observe(d.Seconds())
}
