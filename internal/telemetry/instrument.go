package telemetry

import (
	"net/http"
	"net/url"
	"slices"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"github.com/exaring/otelpgx"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
)

// The service's metrics are Prometheus (metrics/); the instrumentations
// get a no-op meter so they add no second, unexported set.
var noMeter = metricnoop.NewMeterProvider()

// ConnectInterceptor returns the interceptor for the internal listener's
// Connect/gRPC handlers: one server span per call, named after the
// procedure, child of the caller's span (internal callers are trusted:
// their traceparent is accepted as the parent, not only linked). Server
// peer attributes (the caller's address and port) stay off, as
// otelconnect v0.12 has them by default, to bound cardinality; no header
// and no message body is recorded. Pass it first to connect.WithInterceptors
// so the span covers authentication too. Under LogSlot it also records
// the span for the request log line (logslot.go).
func ConnectInterceptor(tp trace.TracerProvider) (connect.Interceptor, error) {
	ic, err := otelconnect.NewInterceptor(
		otelconnect.WithTracerProvider(tp),
		otelconnect.WithPropagator(Propagator),
		otelconnect.WithTrustRemote(),
		otelconnect.WithoutMetrics(),
	)
	if err != nil {
		return nil, err
	}
	return slotInterceptor{ic}, nil
}

// Transport wraps base (the one outbound client's transport, from
// internal/outbound) so every upstream call is a client span, child of the
// request's span, and carries traceparent to Trackunit. nil base means
// http.DefaultTransport. Span names are "METHOD host"; no header or body is
// recorded, and query values in url.full are blanked.
func Transport(base http.RoundTripper, tp trace.TracerProvider) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return otelhttp.NewTransport(redactingTransport{base},
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(Propagator),
		otelhttp.WithMeterProvider(noMeter),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + r.URL.Host
		}),
	)
}

// Middleware wraps the public listener's handler: one server span per
// request for the given routes (e.g. "/appinstall"), none for anything
// else (health checks, scans of unknown paths). The public listener is
// reached from outside, so an incoming traceparent is linked, never
// trusted as the parent.
func Middleware(h http.Handler, tp trace.TracerProvider, routes ...string) http.Handler {
	return otelhttp.NewHandler(redactingHandler{h}, "public",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(Propagator),
		otelhttp.WithMeterProvider(noMeter),
		otelhttp.WithPublicEndpointFn(func(*http.Request) bool { return true }),
		otelhttp.WithFilter(func(r *http.Request) bool { return slices.Contains(routes, r.URL.Path) }),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + r.URL.Path // only listed routes get here
		}),
	)
}

// PgxTracer returns the tracer for pgxpool.Config.ConnConfig.Tracer: one
// span per query, batch, copy, prepare, connect and pool acquire, named by
// the SQL operation ("SELECT"), with the statement text (store's SQL uses
// placeholders only) but never the arguments (otelpgx records them only
// under WithIncludeQueryParameters, which is not passed) and never a
// Postgres error message (it can quote a value: only the SQLSTATE is kept).
func PgxTracer(tp trace.TracerProvider) *PgxTracerWrapper {
	return &PgxTracerWrapper{t: otelpgx.NewTracer(
		otelpgx.WithTracerProvider(tp),
		otelpgx.WithMeterProvider(noMeter),
	)}
}

// redactingTransport runs inside otelhttp's transport, after it has set
// url.full, and overwrites it with the query values blanked (keys kept, for
// debugging): a query string is the one thing otelhttp records that could
// carry a credential.
type redactingTransport struct{ next http.RoundTripper }

func (t redactingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.RawQuery != "" || r.URL.User != nil {
		u := *r.URL
		u.User = nil
		u.RawQuery = redactQuery(u.RawQuery)
		trace.SpanFromContext(r.Context()).SetAttributes(attribute.String("url.full", u.String()))
	}
	return t.next.RoundTrip(r)
}

// redactingHandler does the same for the server span's url.query.
type redactingHandler struct{ next http.Handler }

func (h redactingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" {
		trace.SpanFromContext(r.Context()).SetAttributes(attribute.String("url.query", redactQuery(r.URL.RawQuery)))
	}
	h.next.ServeHTTP(w, r)
}

func redactQuery(raw string) string {
	if raw == "" {
		return ""
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "REDACTED"
	}
	for k := range q {
		q[k] = []string{"REDACTED"}
	}
	return q.Encode()
}
