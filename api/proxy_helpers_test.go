package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/api"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/metrics"
	"github.com/irisx-broker/irisx-broker/store"
)

// proxyHarness is the internal listener with the IRIS API proxy mounted,
// its upstream the simulator's IRIS stand-in, its tokens from the real
// broker (counted), its holds in the harness's database, on a fake clock.
type proxyHarness struct {
	*harness
	clock   *testkit.Clock
	tokens  *countingTokens
	metrics *metrics.Metrics
	srv     *httptest.Server
}

func newProxyHarness(t *testing.T) *proxyHarness {
	t.Helper()
	h := newHarness(t, harnessOptions{allowedApps: []string{testApp}})
	p := &proxyHarness{harness: h, clock: testkit.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}
	p.tokens = &countingTokens{next: api.BrokerProxyTokens(h.broker)}
	p.srv, p.metrics = p.replica(h.store)
	return p
}

// replica starts another internal listener with its own proxy (and so its
// own view of the holds) on st, sharing the token source and the clock.
func (p *proxyHarness) replica(st *store.Store) (*httptest.Server, *metrics.Metrics) {
	p.t.Helper()
	m := metrics.New()
	srv := httptest.NewServer(api.NewInternal(api.InternalDeps{
		Verifier: p.verifier, Store: st, Metrics: m.Handler(), InternalTokens: []crypto.Secret{internalToken}, AdminTokens: []crypto.Secret{adminToken},
		AllowedApps: []string{testApp}, Logger: loggerTo(p.logs),
		Proxy: &api.ProxyDeps{Tokens: p.tokens, Holds: st, UpstreamURL: p.simURL, Now: p.clock.Now, Observer: m.NewProxy()},
	}))
	p.t.Cleanup(srv.Close)
	return srv, m
}

// secondReplica is a replica on its own connection pool to the same
// database, as another process would be.
func (p *proxyHarness) secondReplica() *httptest.Server {
	p.t.Helper()
	pool, err := store.Open(context.Background(), p.dbURL)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(pool.Close)
	srv, _ := p.replica(store.New(pool, p.keys))
	return srv
}

// installed installs a fresh account and returns it with its client id.
func (p *proxyHarness) installed() (account, clientID string) {
	p.t.Helper()
	account = uuid.NewString()
	clientID, _ = p.install(account)
	return account, clientID
}

// do sends method to the proxy for account and path, with the internal
// token unless headers set Authorization.
func (p *proxyHarness) do(srv *httptest.Server, method, account, path string, body io.Reader, headers ...string) *http.Response {
	p.t.Helper()
	req, err := http.NewRequest(method, srv.URL+"/iris/accounts/"+account+"/"+path, body)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+internalToken)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	return resp
}

// call is do, reading the whole answer.
func (p *proxyHarness) call(srv *httptest.Server, method, account, path string, body io.Reader, headers ...string) (*http.Response, string) {
	p.t.Helper()
	resp := p.do(srv, method, account, path, body, headers...)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatal(err)
	}
	return resp, string(b)
}

func graphqlBody() io.Reader { return strings.NewReader(`{"query":"{ assets { id } }"}`) }

// upstreamCalls is how many requests reached the IRIS stand-in.
func (p *proxyHarness) upstreamCalls() int {
	return p.sim.Calls("iris") + p.sim.Calls("graphql")
}

// wantErrorBody checks a {"error","message"} answer.
func wantErrorBody(t *testing.T, resp *http.Response, body string, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	var e struct{ Error, Message string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != code || e.Message == "" {
		t.Fatalf("body %q: want {\"error\":%q,\"message\":...}", body, code)
	}
}

// countingTokens counts the tokens asked of the core and the ones forgotten.
type countingTokens struct {
	next    api.ProxyTokens
	minted  atomic.Int64
	forgets atomic.Int64
	mu      sync.Mutex
	issued  []string
}

func (c *countingTokens) Token(ctx context.Context, app, account string, scopes []string) (crypto.Secret, error) {
	c.minted.Add(1)
	tok, err := c.next.Token(ctx, app, account, scopes)
	if err == nil {
		c.mu.Lock()
		c.issued = append(c.issued, tok.Reveal())
		c.mu.Unlock()
	}
	return tok, err
}

func (c *countingTokens) Forget(ctx context.Context, app, account string, scopes []string, rejected crypto.Secret) {
	c.forgets.Add(1)
	c.next.Forget(ctx, app, account, scopes, rejected)
}

func (c *countingTokens) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.issued...)
}

func loggerTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
