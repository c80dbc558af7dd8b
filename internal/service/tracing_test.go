package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/irisx-broker/irisx-broker/client"
	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/service"
	"github.com/irisx-broker/irisx-broker/internal/telemetry/telemetrytest"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// Bearer and admin tokens distinct enough to be found in a span.
const (
	traceBearer = "internal-bearer-7c1e5f0a9b"
	traceAdmin  = "admin-bearer-3d8b2a6e4f"
)

// tracedSim is the simulator behind a recorder of what the broker sent to
// its token endpoints (the traceparent header) and what they answered (the
// tokens, to look for in the spans).
type tracedSim struct {
	*trackunitsim.Sim
	url string

	mu          sync.Mutex
	traceparent map[string][]string // by path
	answers     []string            // bodies of the token endpoints' answers
}

func newTracedSim(t *testing.T) *tracedSim {
	t.Helper()
	sim, err := trackunitsim.New(trackunitsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := &tracedSim{Sim: sim, traceparent: map[string][]string{}}
	h := sim.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "jwks") {
			h.ServeHTTP(w, r)
			return
		}
		rec := &teeWriter{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		ts.mu.Lock()
		ts.traceparent[r.URL.Path] = append(ts.traceparent[r.URL.Path], r.Header.Get("traceparent"))
		ts.answers = append(ts.answers, rec.body.String())
		ts.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	ts.url = srv.URL
	return ts
}

type teeWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (w *teeWriter) Write(b []byte) (int, error) {
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

func (s *tracedSim) sent(path string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.traceparent[path]...)
}

// issued is every access and refresh token the token endpoints answered.
func (s *tracedSim) issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, a := range s.answers {
		var body struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		}
		if json.Unmarshal([]byte(a), &body) == nil {
			for _, tok := range []string{body.AccessToken, body.RefreshToken} {
				if tok != "" {
					out = append(out, tok)
				}
			}
		}
	}
	return out
}

// startTraced runs one instance on a fresh database with the given
// dependencies (a tracer provider, a lookup) and waits until it is ready.
func startTraced(t *testing.T, sim *tracedSim, logs *testkit.Buffer, d service.Deps, mod func(*config.Config)) *service.Service {
	t.Helper()
	keys := testkit.Keyring(t, testkit.KeySpec)
	cfg := &config.Config{
		DatabaseURL: crypto.Secret(testdb.NewDatabase(t)), PublicAddr: "127.0.0.1:0", InternalAddr: "127.0.0.1:0", Keyring: keys,
		InternalAPITokens: []crypto.Secret{traceBearer}, AdminAPITokens: []crypto.Secret{traceAdmin},
		JWKSURL: sim.url + "/api/marketplace/jwks", AuthURL: sim.url,
		IdentityLeeway: time.Minute, IdentityMaxAge: 10 * time.Minute,
		AllowedAppIDs: []string{testApp}, DefaultScopes: []string{"asset.view"}, TokenRefreshMargin: 5 * time.Minute,
	}
	if mod != nil {
		mod(cfg)
	}
	d.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d.TokenHTTP = &http.Client{Timeout: 5 * time.Second}
	d.TokenSleep = func(context.Context, time.Duration) error { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := service.New(ctx, cfg, d)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	testkit.WaitFor(t, "the instance to be ready", func() bool { return svc.Verifier.Ready() && svc.Ready() })
	return svc
}

// everything is every string the spans expose (telemetrytest.Everything).
func everything(spans tracetest.SpanStubs) string { return telemetrytest.Everything(spans) }

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}

// spanSet indexes the exported spans of one scenario.
type spanSet tracetest.SpanStubs

func (ss spanSet) inTrace(id trace.TraceID) spanSet {
	var out spanSet
	for _, s := range ss {
		if s.SpanContext.TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}

func (ss spanSet) named(name string) spanSet {
	var out spanSet
	for _, s := range ss {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func (ss spanSet) childrenOf(parent tracetest.SpanStub) spanSet {
	var out spanSet
	for _, s := range ss {
		if s.Parent.SpanID() == parent.SpanContext.SpanID() && s.Parent.TraceID() == parent.SpanContext.TraceID() {
			out = append(out, s)
		}
	}
	return out
}

func (ss spanSet) sql() spanSet {
	var out spanSet
	for _, s := range ss {
		if attr(s, "db.query.text") != "" {
			out = append(out, s)
		}
	}
	return out
}

func (ss spanSet) names() string {
	var n []string
	for _, s := range ss {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}

// A full scenario under an in-memory exporter: callback, cold GetToken,
// cached GetToken, API-user token. Each is one trace with the layers
// linked parent to child, trace context reaches Trackunit and comes in from
// the caller, the request log lines carry the trace ids, and no secret is
// in any span.
func TestTracesFollowRequestsAcrossLayers(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	sim := newTracedSim(t)
	logs := &testkit.Buffer{}
	svc := startTraced(t, sim, logs, service.Deps{TracerProvider: tp}, nil)
	ctx := context.Background()
	exp.Reset() // start-up work is not part of the scenario

	// The caller's own spans come from a provider of its own.
	callerExp := tracetest.NewInMemoryExporter()
	callerTP := sdktrace.NewTracerProvider(sdktrace.WithSyncer(callerExp))
	t.Cleanup(func() { _ = callerTP.Shutdown(context.Background()) })
	broker := client.New("http://"+svc.InternalAddr(), traceBearer, client.WithIrisAppID(testApp))

	// 1. The install callback.
	account := uuid.NewString()
	clientID, clientSecret := trackunitsim.NewClientCredentials()
	jwt, err := sim.SignIdentity(trackunitsim.Claims{"accountId": account, "irisAppId": testApp})
	if err != nil {
		t.Fatal(err)
	}
	status, body, err := sim.SendInstall(ctx, "http://"+svc.PublicAddr()+"/appinstall", trackunitsim.InstallEvent{
		Type: trackunitsim.EventInstalled, IrisAppID: testApp, AccountID: account, ClientID: clientID, ClientSecret: clientSecret,
	}, jwt)
	if err != nil || status != http.StatusOK {
		t.Fatalf("callback: %d %s %v", status, body, err)
	}
	testkit.WaitFor(t, "the callback's server span", func() bool { return len(spanSet(exp.GetSpans()).named("POST /appinstall")) == 1 })
	spans := spanSet(exp.GetSpans())
	root := spans.named("POST /appinstall")[0]
	if root.Parent.IsValid() || root.SpanKind != trace.SpanKindServer {
		t.Errorf("callback span: parent %v kind %v, want a server root", root.Parent, root.SpanKind)
	}
	cb := spans.inTrace(root.SpanContext.TraceID())
	verify := cb.childrenOf(root).named("identity.Verify")
	if len(verify) != 1 || attr(verify[0], "irisx.identity.outcome") != "ok" {
		t.Errorf("identity.Verify under the callback: %v (trace: %s)", verify, cb.names())
	}
	if sqlUnderRoot := cb.childrenOf(root).sql(); len(sqlUnderRoot) == 0 {
		t.Errorf("no SQL span under the callback span (trace: %s)", cb.names())
	}
	for _, s := range cb {
		if s.SpanContext.SpanID() != root.SpanContext.SpanID() && !s.Parent.IsValid() {
			t.Errorf("span %q of the callback trace has no parent", s.Name)
		}
	}

	// 2. A cold GetToken: the caller's span -> the RPC's server span ->
	// token.fetch -> the POST to Trackunit, which receives traceparent.
	cctx, call := callerTP.Tracer("caller").Start(ctx, "caller-op")
	tok, err := broker.Token(cctx, account)
	call.End()
	if err != nil {
		t.Fatal(err)
	}
	caller := call.SpanContext()
	spans = spanSet(exp.GetSpans()).inTrace(caller.TraceID())
	rpc := spans.named("irisx.broker.v1.TokenService/GetToken")
	if len(rpc) != 1 || rpc[0].SpanKind != trace.SpanKindServer || rpc[0].Parent.SpanID() != caller.SpanID() {
		t.Fatalf("GetToken server span: %v, want one, child of the caller's span (trace: %s)", rpc, spans.names())
	}
	fetch := spans.childrenOf(rpc[0]).named("token.fetch")
	if len(fetch) != 1 || attr(fetch[0], "irisx.token.kind") != "install" || attr(fetch[0], "irisx.token.outcome") != "ok" {
		t.Fatalf("token.fetch under GetToken: %v (trace: %s)", fetch, spans.names())
	}
	var upstream tracetest.SpanStub
	for _, s := range spans.childrenOf(fetch[0]) {
		if s.SpanKind == trace.SpanKindClient && strings.HasPrefix(s.Name, "POST ") {
			upstream = s
		}
	}
	if !upstream.SpanContext.IsValid() {
		t.Fatalf("no POST client span under token.fetch (trace: %s)", spans.names())
	}
	if len(spans.childrenOf(fetch[0]).sql()) == 0 {
		t.Errorf("no SQL span under token.fetch (trace: %s)", spans.names())
	}
	want := "00-" + caller.TraceID().String() + "-" + upstream.SpanContext.SpanID().String() + "-01"
	if got := sim.sent("/apptoken"); len(got) != 1 || got[0] != want {
		t.Errorf("Trackunit got traceparent %q, want [%q]", got, want)
	}

	// 3. The same GetToken again: from the cache, so no fetch.
	cctx, call2 := callerTP.Tracer("caller").Start(ctx, "caller-op-cached")
	if _, err := broker.Token(cctx, account); err != nil {
		t.Fatal(err)
	}
	call2.End()
	spans = spanSet(exp.GetSpans()).inTrace(call2.SpanContext().TraceID())
	if rpc2 := spans.named("irisx.broker.v1.TokenService/GetToken"); len(rpc2) != 1 || rpc2[0].Parent.SpanID() != call2.SpanContext().SpanID() {
		t.Errorf("cached GetToken server span: %v (trace: %s)", rpc2, spans.names())
	}
	if len(spans.named("token.fetch")) != 0 || len(sim.sent("/apptoken")) != 1 {
		t.Errorf("a cached GetToken fetched: trace %s", spans.names())
	}

	// 4. An API user's token: RPC -> token.fetch -> POST /token.
	userClient, userSecret := trackunitsim.NewClientCredentials()
	const username, password = "ops-trace@example.com", crypto.Secret("pw-5e0c1b7a2d")
	sim.AddUser(username, password, userClient, userSecret)
	if _, err := svc.Store.CreateAPIUser(ctx, store.NewAPIUser{Name: "ops", Username: username,
		Password: password, ClientID: crypto.Secret(userClient), ClientSecret: userSecret}); err != nil {
		t.Fatal(err)
	}
	cctx, call3 := callerTP.Tracer("caller").Start(ctx, "caller-op-user")
	userTok, err := broker.APIUserToken(cctx, "ops")
	call3.End()
	if err != nil {
		t.Fatal(err)
	}
	spans = spanSet(exp.GetSpans()).inTrace(call3.SpanContext().TraceID())
	rpc3 := spans.named("irisx.broker.v1.TokenService/GetApiUserToken")
	if len(rpc3) != 1 || rpc3[0].Parent.SpanID() != call3.SpanContext().SpanID() {
		t.Fatalf("GetApiUserToken server span: %v (trace: %s)", rpc3, spans.names())
	}
	fetch3 := spans.childrenOf(rpc3[0]).named("token.fetch")
	if len(fetch3) != 1 || attr(fetch3[0], "irisx.token.kind") != "api_user" {
		t.Fatalf("token.fetch under GetApiUserToken: %v (trace: %s)", fetch3, spans.names())
	}
	var userUpstream bool
	for _, s := range spans.childrenOf(fetch3[0]) {
		userUpstream = userUpstream || (s.SpanKind == trace.SpanKindClient && strings.HasPrefix(s.Name, "POST "))
	}
	if got := sim.sent("/token"); !userUpstream || len(got) != 1 || !strings.HasPrefix(got[0], "00-"+call3.SpanContext().TraceID().String()+"-") {
		t.Errorf("API user upstream call: client span %v, traceparent sent %q", userUpstream, got)
	}

	// The request log lines carry their traces' ids (the route of a
	// Connect call is its service's pattern).
	wantTraces := map[string]string{ // trace id -> route
		root.SpanContext.TraceID().String():    "/appinstall",
		caller.TraceID().String():              "/irisx.broker.v1.TokenService/*",
		call2.SpanContext().TraceID().String(): "/irisx.broker.v1.TokenService/*",
		call3.SpanContext().TraceID().String(): "/irisx.broker.v1.TokenService/*",
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec struct {
			Msg, Route string
			TraceID    string `json:"trace_id"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "request" && wantTraces[rec.TraceID] == rec.Route {
			delete(wantTraces, rec.TraceID)
		}
	}
	if len(wantTraces) != 0 {
		t.Errorf("no request log line with the trace id of %v:\n%s", wantTraces, logs.String())
	}

	// No secret in any span of the scenario.
	all := everything(exp.GetSpans())
	secrets := map[string]string{
		"install client id": clientID, "install client secret": clientSecret.Reveal(),
		"install access token": tok.AccessToken, "API user access token": userTok.AccessToken,
		"API user client id": userClient, "API user client secret": userSecret.Reveal(), "password": password.Reveal(),
		"bearer token": traceBearer, "admin token": traceAdmin, "identity JWT": jwt,
		"key entry": testkit.KeySpec[strings.IndexByte(testkit.KeySpec, ':')+1:],
	}
	// The JWT's signature alone, too (a part of it would do as much harm).
	secrets["identity JWT signature"] = jwt[strings.LastIndexByte(jwt, '.')+1:]
	for i, issued := range sim.issued() {
		secrets["issued token "+string(rune('a'+i))] = issued
	}
	if len(sim.issued()) < 3 { // apptoken access, /token access and refresh
		t.Errorf("recorded %d issued tokens, want at least 3", len(sim.issued()))
	}
	for what, secret := range secrets {
		if secret == "" {
			t.Errorf("%s: empty, the scan would prove nothing", what)
			continue
		}
		if strings.Contains(all, secret) {
			t.Errorf("the %s appears in a span", what)
		}
	}
}

// With no provider injected, New builds one from the OTEL_* variables: none
// set (only an OTLP endpoint for traces, which does not turn tracing on)
// means no exporter runs, so nothing is printed and nothing reaches a
// collector; OTEL_TRACES_EXPORTER=console prints the spans.
func TestTracingOffUnlessAsked(t *testing.T) {
	var hits atomic.Int32
	collector := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.URL+"/v1/traces")
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")

	run := func(vars map[string]string) string {
		t.Helper()
		sim := newTracedSim(t)
		var out testkit.Buffer
		logs := &testkit.Buffer{}
		lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
		ctx, cancel := context.WithCancel(context.Background())
		keys := testkit.Keyring(t, testkit.KeySpec)
		cfg := &config.Config{
			DatabaseURL: crypto.Secret(testdb.NewDatabase(t)), PublicAddr: "127.0.0.1:0", InternalAddr: "127.0.0.1:0", Keyring: keys,
			InternalAPITokens: []crypto.Secret{traceBearer}, AdminAPITokens: []crypto.Secret{traceAdmin},
			JWKSURL: sim.url + "/api/marketplace/jwks", AuthURL: sim.url, IdentityLeeway: time.Minute, IdentityMaxAge: 10 * time.Minute,
			AllowedAppIDs: []string{testApp}, DefaultScopes: []string{"asset.view"}, TokenRefreshMargin: 5 * time.Minute,
		}
		svc, err := service.New(ctx, cfg, service.Deps{Lookup: lookup, TraceOutput: &out,
			Logger: slog.New(slog.NewJSONHandler(logs, nil)), TokenHTTP: &http.Client{Timeout: 5 * time.Second}})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = svc.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		testkit.WaitFor(t, "the instance to be ready", func() bool { return svc.Verifier.Ready() && svc.Ready() })

		account := uuid.NewString()
		id, secret := trackunitsim.NewClientCredentials()
		if status, body, err := sim.SendInstall(ctx, "http://"+svc.PublicAddr()+"/appinstall", trackunitsim.InstallEvent{
			Type: trackunitsim.EventInstalled, IrisAppID: testApp, AccountID: account, ClientID: id, ClientSecret: secret}, ""); err != nil || status != http.StatusOK {
			t.Fatalf("callback: %d %s %v", status, body, err)
		}
		broker := client.New("http://"+svc.InternalAddr(), traceBearer, client.WithIrisAppID(testApp))
		if _, err := broker.Token(ctx, account); err != nil {
			t.Fatal(err)
		}
		if got := sim.sent("/apptoken"); len(got) != 1 {
			t.Fatalf("%d upstream calls, want 1", len(got))
		} else if vars["OTEL_TRACES_EXPORTER"] == "" && got[0] != "" {
			t.Errorf("tracing off, yet Trackunit got traceparent %q", got[0])
		}
		if vars["OTEL_TRACES_EXPORTER"] == "" && strings.Contains(logs.String(), "trace_id") {
			t.Errorf("tracing off, yet a log line has a trace_id:\n%s", logs.String())
		}
		cancel()
		<-done // Run flushes the provider it built
		return out.String()
	}

	if out := run(map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.URL + "/v1/traces", "OTEL_SERVICE_NAME": "x"}); out != "" {
		t.Errorf("tracing off printed spans: %s", out)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("tracing off: the collector got %d requests", n)
	}
	out := run(map[string]string{"OTEL_TRACES_EXPORTER": "console"})
	for _, name := range []string{`"Name":"POST /appinstall"`, `"Name":"identity.Verify"`, `"Name":"irisx.broker.v1.TokenService/GetToken"`, `"Name":"token.fetch"`} {
		if !strings.Contains(out, name) {
			t.Errorf("console exporter output lacks %s", name)
		}
	}
}

// The traced transport on the Trackunit client still follows no redirect:
// a 307 from the token endpoint is the answer, and its target gets nothing.
func TestTracedTokenClientFollowsNoRedirect(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	var reached atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached.Add(1) }))
	defer target.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	sim := newTracedSim(t)
	svc := startTraced(t, sim, &testkit.Buffer{}, service.Deps{TracerProvider: tp}, func(c *config.Config) { c.AuthURL = redirector.URL })
	ctx := context.Background()
	account := uuid.NewString()
	id, secret := trackunitsim.NewClientCredentials()
	if _, err := svc.Store.ApplyInstallEvent(ctx, store.InstallEvent{Type: store.TypeInstalled, IrisAppID: testApp, AccountID: account,
		ClientID: crypto.Secret(id), ClientSecret: secret}); err != nil {
		t.Fatal(err)
	}
	broker := client.New("http://"+svc.InternalAddr(), traceBearer, client.WithIrisAppID(testApp))
	if _, err := broker.Token(ctx, account); err == nil {
		t.Fatal("GetToken succeeded through a redirecting token endpoint")
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the redirect target received %d requests, want 0", n)
	}
	var clientSpans int
	for _, s := range exp.GetSpans() {
		if s.SpanKind == trace.SpanKindClient && strings.HasPrefix(s.Name, "POST ") {
			clientSpans++
		}
	}
	if clientSpans == 0 {
		t.Error("no client span: the call did not go through the traced transport")
	}
}
