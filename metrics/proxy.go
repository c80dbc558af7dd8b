package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ProxyMetrics counts the IRIS API proxy's requests by method and status
// class only: never by account, app, path or token, whose values are
// unbounded or secret.
type ProxyMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewProxy registers the proxy's collectors on m's registry.
func (m *Metrics) NewProxy() *ProxyMetrics {
	p := &ProxyMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "irisx_proxy_requests_total",
			Help: "IRIS API proxy requests by method and status class (2xx, 3xx, 4xx, 5xx).",
		}, []string{"method", "class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "irisx_proxy_request_duration_seconds",
			Help:    "IRIS API proxy latency, from the request to the end of the answer, by method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method"}),
	}
	m.reg.MustRegister(p.requests, p.duration)
	return p
}

// ProxyRequest records one proxied request.
func (p *ProxyMetrics) ProxyRequest(method string, status int, d time.Duration) {
	method = proxyMethod(method)
	p.requests.WithLabelValues(method, statusClass(status)).Inc()
	p.duration.WithLabelValues(method).Observe(d.Seconds())
}

// proxyMethod folds methods outside the standard set into "other", so a
// caller cannot grow the label set.
func proxyMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

func statusClass(status int) string {
	switch {
	case status >= 200 && status < 300:
		return "2xx"
	case status >= 300 && status < 400:
		return "3xx"
	case status >= 400 && status < 500:
		return "4xx"
	case status >= 500 && status < 600:
		return "5xx"
	}
	return "other"
}
