// Package telemetry owns the service's OpenTelemetry tracing: the tracer
// provider built from the standard OTEL_* variables (off unless
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set), the W3C
// propagator, and the few instrumentation helpers the assembly wires in: a
// Connect interceptor, an outbound transport, an inbound HTTP middleware, a
// pgx tracer and a slog handler that adds trace_id.
//
// Every helper takes the provider explicitly: nothing here sets the OTel
// globals, so tests run side by side with their own in-memory exporters.
// No helper records a header, a request or response body, a query argument
// or a database error message: those are where secrets live.
package telemetry

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ServiceName is service.name unless OTEL_SERVICE_NAME says otherwise.
const ServiceName = "irisx-broker"

// Propagator is the one propagation format, W3C Trace Context, for both
// the context accepted from internal callers and the one sent to Trackunit.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Option configures Setup.
type Option func(*setupOptions)

type setupOptions struct {
	console io.Writer
}

// WithConsoleWriter makes OTEL_TRACES_EXPORTER=console write its spans to w
// (the command's stdout) instead of os.Stdout.
func WithConsoleWriter(w io.Writer) Option {
	return func(o *setupOptions) { o.console = w }
}

// Enabled reports whether the OTEL_* variables ask for traces: only when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set, and not when
// OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true.
func Enabled(lookup func(string) (string, bool)) bool {
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	exporter := strings.ToLower(get("OTEL_TRACES_EXPORTER"))
	if exporter == "none" {
		return false
	}
	return exporter != "" || get("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

// On reports whether tp can record anything: false for nil and for the
// no-op provider Setup returns with tracing off, so that the assembly wires
// no instrumentation at all then.
func On(tp trace.TracerProvider) bool {
	_, off := tp.(noop.TracerProvider)
	return tp != nil && !off
}

// Setup returns the tracer provider the OTEL_* variables describe and the
// function that flushes and stops it (call it on shutdown, with a fresh
// deadline). When tracing is off it returns a no-op provider: no exporter
// is created, no goroutine started, and spans cost next to nothing.
//
// OTEL_TRACES_EXPORTER=console prints spans as JSON lines; otlp (the
// default when only OTEL_EXPORTER_OTLP_ENDPOINT is set) goes through
// autoexport, whose exporter reads OTEL_EXPORTER_OTLP_* (endpoint,
// protocol, headers) from the process environment as the SDK always does.
// The sampler is OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, default
// parentbased_always_on.
func Setup(ctx context.Context, lookup func(string) (string, bool), opts ...Option) (trace.TracerProvider, func(context.Context) error, error) {
	noopShutdown := func(context.Context) error { return nil }
	if !Enabled(lookup) {
		return noop.NewTracerProvider(), noopShutdown, nil
	}
	o := setupOptions{console: os.Stdout}
	for _, opt := range opts {
		opt(&o)
	}
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }

	sampler, err := parseSampler(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))
	if err != nil {
		return nil, nil, err
	}
	var exp sdktrace.SpanExporter
	switch name := strings.ToLower(get("OTEL_TRACES_EXPORTER")); name {
	case "console":
		exp, err = stdouttrace.New(stdouttrace.WithWriter(o.console))
	case "", "otlp":
		exp, err = autoexport.NewSpanExporter(ctx)
	default:
		return nil, nil, fmt.Errorf("OTEL_TRACES_EXPORTER: %q is not supported; use otlp, console or none", name)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("OTEL_TRACES_EXPORTER: creating the exporter: %w", err)
	}
	service := get("OTEL_SERVICE_NAME")
	if service == "" {
		service = ServiceName
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		res = resource.NewSchemaless(semconv.ServiceName(service))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sampler),
		sdktrace.WithResource(res),
	)
	return tp, tp.Shutdown, nil
}

// parseSampler reads OTEL_TRACES_SAMPLER the way the SDK does, but through
// the injected lookup, so tests and the bench choose it without touching
// the process environment.
func parseSampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: must be a ratio between 0 and 1")
		}
		return r, nil
	}
	switch strings.ToLower(name) {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio":
		r, err := ratio()
		return sdktrace.TraceIDRatioBased(r), err
	case "parentbased_traceidratio":
		r, err := ratio()
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), err
	}
	return nil, fmt.Errorf("OTEL_TRACES_SAMPLER: %q is not supported", name)
}
