package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/client"
	"github.com/irisx-broker/irisx-broker/internal/telemetry/telemetrytest"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
)

func lookupFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// memProvider is a provider that keeps its spans in memory, synchronously.
func memProvider(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// everything is every string the spans expose (telemetrytest.Everything).
func everything(spans tracetest.SpanStubs) string { return telemetrytest.Everything(spans) }

func TestSetupOffStartsNoExporter(t *testing.T) {
	var hits atomic.Int32
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer collector.Close()
	// Variables that configure an exporter, but none that turns tracing on.
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.URL+"/v1/traces")
	for name, env := range map[string]map[string]string{
		"nothing set":   {},
		"only others":   {"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.URL + "/v1/traces"},
		"exporter none": {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL},
		"sdk disabled":  {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"},
	} {
		var out bytes.Buffer
		tp, shutdown, err := Setup(context.Background(), lookupFrom(env), WithConsoleWriter(&out))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, ok := tp.(noop.TracerProvider); !ok {
			t.Errorf("%s: provider is %T, want the no-op provider", name, tp)
		}
		_, span := tp.Tracer("t").Start(context.Background(), "op")
		if span.IsRecording() {
			t.Errorf("%s: a span records", name)
		}
		span.End()
		if err := shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if out.Len() > 0 {
			t.Errorf("%s: console output %q", name, out.String())
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the collector got %d requests with tracing off", n)
	}
}

func TestSetupConsole(t *testing.T) {
	var out bytes.Buffer
	tp, shutdown, err := Setup(context.Background(), lookupFrom(map[string]string{"OTEL_TRACES_EXPORTER": "console"}), WithConsoleWriter(&out))
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("t").Start(context.Background(), "console-span")
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Name     string
		Resource []struct{ Key string }
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.Name != "console-span" {
		t.Fatalf("console output %q: %v", out.String(), err)
	}
	if !strings.Contains(out.String(), `"service.name","Value":{"Type":"STRING","Value":"irisx-broker"}`) {
		t.Errorf("no service.name irisx-broker in %s", out.String())
	}
}

// OTEL_EXPORTER_OTLP_ENDPOINT alone turns on the OTLP exporter (autoexport,
// http/protobuf by default), which posts to /v1/traces.
func TestSetupOTLP(t *testing.T) {
	var paths atomic.Value
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.Method + " " + r.URL.Path)
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	tp, shutdown, err := Setup(context.Background(), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("t").Start(context.Background(), "otlp-span")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := paths.Load().(string); got != "POST /v1/traces" {
		t.Errorf("collector got %q", got)
	}
}

func TestSetupRefusesBadSampler(t *testing.T) {
	for _, env := range []map[string]string{
		{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "sometimes"},
		{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
		{"OTEL_TRACES_EXPORTER": "zipkin"},
	} {
		if _, _, err := Setup(context.Background(), lookupFrom(env), WithConsoleWriter(io.Discard)); err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_") {
			t.Errorf("%v: err = %v, want one naming the variable", env, err)
		}
	}
	tp, shutdown, err := Setup(context.Background(), lookupFrom(map[string]string{
		"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01",
	}), WithConsoleWriter(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if s := tp.(*sdktrace.TracerProvider); s == nil {
		t.Error("no SDK provider")
	}
}

// tokenService answers GetToken, failing the call when the span it runs in
// is not the interceptor's.
type tokenService struct {
	brokerv1connect.UnimplementedTokenServiceHandler
}

func (tokenService) GetToken(ctx context.Context, _ *connect.Request[brokerv1.GetTokenRequest]) (*connect.Response[brokerv1.GetTokenResponse], error) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return nil, connect.NewError(connect.CodeInternal, errors.New("handler not in a recording span"))
	}
	return connect.NewResponse(&brokerv1.GetTokenResponse{AccessToken: "iris-access-token-SECRET", TokenType: "Bearer", ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}), nil
}

// A Connect call from the Go client through the interceptor is one server
// span, child of the caller's span, with no peer attribute and nothing of
// the bearer token, the account or the access token.
func TestConnectInterceptor(t *testing.T) {
	tp, exp := memProvider(t)
	ic, err := ConnectInterceptor(tp)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(brokerv1connect.NewTokenServiceHandler(tokenService{}, connect.WithInterceptors(ic)))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	callerTP, callerExp := memProvider(t)
	ctx, caller := callerTP.Tracer("caller").Start(context.Background(), "caller-op")
	c := client.New(srv.URL, "internal-bearer-SECRET", client.WithIrisAppID("@org/app"))
	if _, err := c.Token(ctx, "account-0000-SECRET"); err != nil {
		t.Fatal(err)
	}
	caller.End()

	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1: %v", len(spans), spans)
	}
	s := spans[0]
	if s.Name != "irisx.broker.v1.TokenService/GetToken" || s.SpanKind != trace.SpanKindServer {
		t.Errorf("span %q kind %v", s.Name, s.SpanKind)
	}
	callerSpan := callerExp.GetSpans()[0].SpanContext
	if s.Parent.SpanID() != callerSpan.SpanID() || s.SpanContext.TraceID() != callerSpan.TraceID() {
		t.Errorf("server span parent %v, want the caller's span %v", s.Parent, callerSpan)
	}
	for _, a := range s.Attributes {
		if k := string(a.Key); strings.HasPrefix(k, "network.peer") || strings.HasPrefix(k, "client.") || strings.HasPrefix(k, "net.sock.peer") || strings.HasPrefix(k, "net.peer") {
			t.Errorf("peer attribute %s=%s", k, a.Value.String())
		}
	}
	if all := everything(spans); strings.Contains(all, "SECRET") {
		t.Errorf("a span holds a secret:\n%s", all)
	}
}

// The outbound transport makes a client span and sends its traceparent;
// query values in url.full are blanked.
func TestTransportInjectsTraceparent(t *testing.T) {
	tp, exp := memProvider(t)
	var got atomic.Value
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("traceparent"))
	}))
	defer upstream.Close()
	hc := &http.Client{Transport: Transport(nil, tp)}
	ctx, parent := tp.Tracer("t").Start(context.Background(), "get-token")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, upstream.URL+"/token?code=query-SECRET", strings.NewReader("client_secret=form-SECRET"))
	req.Header.Set("Authorization", "Basic header-SECRET")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	parent.End()

	var client tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.SpanKind == trace.SpanKindClient {
			client = s
		}
	}
	if client.Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("client span %q has parent %v, want %v", client.Name, client.Parent.SpanID(), parent.SpanContext().SpanID())
	}
	want := "00-" + client.SpanContext.TraceID().String() + "-" + client.SpanContext.SpanID().String() + "-01"
	if tp, _ := got.Load().(string); tp != want {
		t.Errorf("upstream got traceparent %q, want %q", tp, want)
	}
	if !strings.HasPrefix(client.Name, "POST 127.0.0.1:") {
		t.Errorf("client span name %q", client.Name)
	}
	if all := everything(exp.GetSpans()); strings.Contains(all, "SECRET") {
		t.Errorf("a span holds a secret:\n%s", all)
	}
}

// The public middleware makes a server span for listed routes only, and a
// traceparent from outside is a link, not the parent.
func TestMiddleware(t *testing.T) {
	tp, exp := memProvider(t)
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), tp, "/appinstall")
	outside := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, path := range []string{"/appinstall", "/healthz", "/readyz", "/wp-login.php"} {
		req := httptest.NewRequest(http.MethodPost, path+"?token=query-SECRET", strings.NewReader(`{}`))
		req.Header.Set("traceparent", outside)
		req.Header.Set("Trackunit-Identity", "jwt-SECRET")
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "POST /appinstall" || spans[0].SpanKind != trace.SpanKindServer {
		t.Fatalf("spans %v, want one POST /appinstall server span", spans)
	}
	s := spans[0]
	if s.Parent.IsValid() || s.SpanContext.TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Error("the outside traceparent became the parent")
	}
	if len(s.Links) != 1 || s.Links[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("links %v, want the outside span", s.Links)
	}
	if all := everything(spans); strings.Contains(all, "SECRET") {
		t.Errorf("a span holds a secret:\n%s", all)
	}
}

func TestLogHandlerAddsTraceID(t *testing.T) {
	tp, _ := memProvider(t)
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("listener", "internal")
	ctx, span := tp.Tracer("t").Start(context.Background(), "op")
	log.InfoContext(ctx, "request")
	span.End()
	log.InfoContext(context.Background(), "no span")
	offCtx, off := noop.NewTracerProvider().Tracer("t").Start(context.Background(), "off")
	log.InfoContext(offCtx, "tracing off")
	off.End()

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("log lines: %q", lines)
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["trace_id"] != span.SpanContext().TraceID().String() || first["span_id"] != span.SpanContext().SpanID().String() || first["listener"] != "internal" {
		t.Errorf("first line %v", first)
	}
	for _, l := range lines[1:] {
		if strings.Contains(l, "trace_id") {
			t.Errorf("a line without a recording span has trace_id: %s", l)
		}
	}
}

// otelpgx spans carry the SQL but never its arguments, and a failing query
// leaves only the SQLSTATE, not Postgres's message quoting the value.
func TestPgxTracerRecordsNoArguments(t *testing.T) {
	tp, exp := memProvider(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(testdb.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	InstrumentPool(cfg, PgxTracer(tp))
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	const secret = "planted-client-secret-7f3a9c"
	ctx, parent := tp.Tracer("t").Start(ctx, "store-call")
	var echoed string
	if err := pool.QueryRow(ctx, "SELECT $1::text", secret).Scan(&echoed); err != nil || echoed != secret {
		t.Fatalf("query: %q %v", echoed, err)
	}
	if _, err := pool.Exec(ctx, "SELECT $1::int", secret); err == nil {
		t.Fatal("a text cast to int succeeded")
	} else if !strings.Contains(err.Error(), secret) {
		t.Logf("note: Postgres did not quote the value (%v); the scan below still holds", err)
	}
	b := &pgx.Batch{}
	b.Queue("SELECT $1::text", secret)
	b.Queue("SELECT length($1::text)", secret)
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	parent.End()

	spans := exp.GetSpans()
	var sawSelect, sawChild, sawError bool
	for _, s := range spans {
		if s.Name == "SELECT" {
			sawSelect = true
		}
		if s.Parent.SpanID() == parent.SpanContext().SpanID() {
			sawChild = true
		}
		if s.Status.Code == 1 { // codes.Error
			sawError = true
		}
	}
	if !sawSelect || !sawChild || !sawError {
		t.Errorf("select span %v, child of the caller %v, error span %v; spans: %d", sawSelect, sawChild, sawError, len(spans))
	}
	all := everything(spans)
	if strings.Contains(all, secret) {
		t.Errorf("a span holds the query argument:\n%s", all)
	}
	if !strings.Contains(all, "SQLSTATE 22P02") {
		t.Errorf("the failing query's span does not keep its SQLSTATE:\n%s", all)
	}
	if !strings.Contains(all, "SELECT $1::text") {
		t.Errorf("the statement text is missing:\n%s", all)
	}
}

// Under LogSlot, a line logged with the request's context after the
// Connect handler returned (the request logger's) carries the trace_id of
// the interceptor's span, which has ended by then; without a sampled span
// it carries none.
func TestLogSlotJoinsTheRequestLine(t *testing.T) {
	tp, exp := memProvider(t)
	ic, err := ConnectInterceptor(tp)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil)))
	path, h := brokerv1connect.NewTokenServiceHandler(tokenService{}, connect.WithInterceptors(ic))
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewServer(LogSlot(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r)
		log.InfoContext(r.Context(), "request") // as the request logger, after the handler
	})))
	defer srv.Close()
	c := client.New(srv.URL, "bearer", client.WithIrisAppID("@org/app"))
	if _, err := c.Token(context.Background(), "account"); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["trace_id"] != spans[0].SpanContext.TraceID().String() || line["span_id"] != spans[0].SpanContext.SpanID().String() {
		t.Errorf("request line %v, want the Connect span's ids %v", line, spans[0].SpanContext)
	}

	// The same with a provider that samples nothing: no trace_id.
	off := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	icOff, err := ConnectInterceptor(off)
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	_, hOff := brokerv1connect.NewTokenServiceHandler(tokenService{}, connect.WithInterceptors(icOff))
	mux = http.NewServeMux()
	mux.Handle(path, hOff)
	if _, err := c.Token(context.Background(), "account"); err == nil {
		t.Fatal("the handler ran outside a recording span and still answered") // tokenService refuses that
	}
	if strings.Contains(buf.String(), "trace_id") {
		t.Errorf("unsampled call logged a trace_id: %s", buf.String())
	}
}

// A statement outside any trace (background work) makes no span; inside
// one, it does.
func TestPgxTracerSkipsOrphans(t *testing.T) {
	tp, exp := memProvider(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(testdb.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	InstrumentPool(cfg, PgxTracer(tp))
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Errorf("a statement outside any trace made %d spans: %v", n, exp.GetSpans())
	}
	tctx, parent := tp.Tracer("t").Start(ctx, "request")
	if _, err := pool.Exec(tctx, "SELECT 2"); err != nil {
		t.Fatal(err)
	}
	parent.End()
	var sql int
	for _, s := range exp.GetSpans() {
		if s.Parent.SpanID() == parent.SpanContext().SpanID() && s.Name == "SELECT" {
			sql++
		}
	}
	if sql != 1 {
		t.Errorf("%d SELECT spans under the request, want 1: %v", sql, exp.GetSpans())
	}
}

func TestOn(t *testing.T) {
	off, _, err := Setup(context.Background(), lookupFrom(nil))
	if err != nil {
		t.Fatal(err)
	}
	on, shutdown, err := Setup(context.Background(), lookupFrom(map[string]string{"OTEL_TRACES_EXPORTER": "console"}), WithConsoleWriter(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if On(nil) || On(off) || !On(on) {
		t.Errorf("On(nil) %v, On(off) %v, On(console) %v; want false, false, true", On(nil), On(off), On(on))
	}
}
