package token

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

const (
	testApp    = "@acme/fleet"
	testSecret = "sEcReT-wZtQppu1huik4cYBAhYXnZS29"
)

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeStore is an in-memory Store.
type fakeStore struct {
	mu        sync.Mutex
	installs  map[string]store.Credentials
	credCalls atomic.Int64
	failWith  error
	marks     []mark
	results   [][]store.TokenResult
}

type mark struct {
	App, Account string
	Version      int64
	LastError    string
}

func newFakeStore() *fakeStore { return &fakeStore{installs: make(map[string]store.Credentials)} }

func clientIDFor(account string) string { return "0oa-client-" + account }

// install stores credentials (status installed), bumping the version.
func (s *fakeStore) install(app, account, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := app + "|" + account
	v := s.installs[k].Version + 1
	s.installs[k] = store.Credentials{IrisAppID: app, AccountID: account, Status: store.StatusInstalled,
		ClientID: crypto.Secret(clientIDFor(account)), ClientSecret: crypto.Secret(secret), Version: v}
}

func (s *fakeStore) setStatus(app, account string, st store.InstallStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := app + "|" + account
	c := s.installs[k]
	c.Status = st
	if st == store.StatusUninstalled {
		c.ClientID, c.ClientSecret = "", ""
	}
	s.installs[k] = c
}

func (s *fakeStore) InstallCredentials(_ context.Context, app, account string) (store.Credentials, error) {
	s.credCalls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failWith != nil {
		return store.Credentials{}, s.failWith
	}
	c, ok := s.installs[app+"|"+account]
	if !ok {
		return store.Credentials{}, fmt.Errorf("install %s/%s: %w", app, account, store.ErrNotFound)
	}
	return c, nil
}

func (s *fakeStore) MarkCredentialsRejected(_ context.Context, app, account string, version int64, lastError string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marks = append(s.marks, mark{app, account, version, lastError})
	k := app + "|" + account
	if c, ok := s.installs[k]; ok && c.Version == version && c.Status == store.StatusInstalled {
		c.Status = store.StatusCredentialsRejected
		s.installs[k] = c
	}
	return nil
}

func (s *fakeStore) RecordTokenResults(_ context.Context, rs []store.TokenResult) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results = append(s.results, append([]store.TokenResult(nil), rs...))
	return nil
}

func (s *fakeStore) getMarks() []mark {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]mark(nil), s.marks...)
}

func (s *fakeStore) getResults() [][]store.TokenResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]store.TokenResult(nil), s.results...)
}

// reply is one scripted upstream answer.
type reply struct {
	status      int
	contentType string
	body        string
	header      map[string]string
	hang        bool // block until the client gives up
}

// seenRequest is what the fake token endpoint received.
type seenRequest struct {
	ClientID, ClientSecret, GrantType, Scope string
	AuthHeader                               bool
}

// fakeUpstream is an httptest /apptoken endpoint. Calls are answered from
// script in order, then with a fresh token.
type fakeUpstream struct {
	srv   *httptest.Server
	calls atomic.Int64

	mu       sync.Mutex
	script   []reply
	always   *reply        // when set, every unscripted call gets it
	gate     chan struct{} // when set, calls wait for it to close
	lifetime int           // expires_in of minted tokens
	seen     []seenRequest
	received chan int // call numbers, as they arrive
}

func newFakeUpstream(t testing.TB) *fakeUpstream {
	u := &fakeUpstream{lifetime: 3600, received: make(chan int, 1024)}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(func() {
		u.open()
		u.srv.Close()
	})
	return u
}

func (u *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/apptoken" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	_ = r.ParseForm()
	n := int(u.calls.Add(1))
	u.mu.Lock()
	u.seen = append(u.seen, seenRequest{ClientID: r.PostForm.Get("client_id"), ClientSecret: r.PostForm.Get("client_secret"),
		GrantType: r.PostForm.Get("grant_type"), Scope: r.PostForm.Get("scope"), AuthHeader: r.Header.Get("Authorization") != ""})
	var rep *reply
	if len(u.script) > 0 {
		rep = &u.script[0]
		u.script = u.script[1:]
	} else if u.always != nil {
		rep = u.always
	}
	gate, life := u.gate, u.lifetime
	u.mu.Unlock()
	select {
	case u.received <- n:
	default:
	}
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if rep != nil && rep.hang {
		<-r.Context().Done()
		return
	}
	if rep != nil {
		for k, v := range rep.header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", rep.contentType)
		w.WriteHeader(rep.status)
		_, _ = w.Write([]byte(rep.body))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": accessToken(n), "token_type": "Bearer", "expires_in": life, "scope": r.PostForm.Get("scope"),
	})
}

func accessToken(n int) string { return fmt.Sprintf("eyJ.AT-SECRET-%d.sig", n) }

// hold makes calls wait until open.
func (u *fakeUpstream) hold() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.gate = make(chan struct{})
}

func (u *fakeUpstream) open() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gate != nil {
		close(u.gate)
		u.gate = nil
	}
}

func (u *fakeUpstream) setScript(rs ...reply) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.script = rs
}

func (u *fakeUpstream) setAlways(r *reply) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.always = r
}

func (u *fakeUpstream) setLifetime(s int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.lifetime = s
}

func (u *fakeUpstream) getSeen() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}

// waitReceived waits for the next request to arrive at the endpoint.
func (u *fakeUpstream) waitReceived(t *testing.T) int {
	t.Helper()
	select {
	case n := <-u.received:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no upstream request arrived")
		return 0
	}
}

// sleepRec records requested backoff sleeps without sleeping.
type sleepRec struct {
	mu sync.Mutex
	ds []time.Duration
}

func (s *sleepRec) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.ds = append(s.ds, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleepRec) get() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.ds...)
}

// fakeObs counts Observer events.
type fakeObs struct {
	hits, misses, refreshes atomic.Int64
	mu                      sync.Mutex
	outcomes                []string
}

func (o *fakeObs) CacheHit(string)     { o.hits.Add(1) }
func (o *fakeObs) CacheMiss(string)    { o.misses.Add(1) }
func (o *fakeObs) RefreshAhead(string) { o.refreshes.Add(1) }
func (o *fakeObs) UpstreamCall(_, outcome string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.outcomes = append(o.outcomes, outcome)
}

func (o *fakeObs) getOutcomes() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.outcomes...)
}

// env is a broker wired to fakes. The jitter source returns 0.5, so an
// entry renews 1.1*margin before expiry and backoffs are half the ceiling.
type env struct {
	b      *Broker
	st     *fakeStore
	up     *fakeUpstream
	clock  *testkit.Clock
	sleeps *sleepRec
	obs    *fakeObs
	logs   *testkit.Buffer
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	e := &env{st: newFakeStore(), up: newFakeUpstream(t), clock: testkit.NewClock(epoch),
		sleeps: &sleepRec{}, obs: &fakeObs{}, logs: &testkit.Buffer{}}
	cfg := Config{
		AuthURL:       e.up.srv.URL + "/",
		DefaultScopes: []string{"asset.view"},
		RefreshMargin: 5 * time.Minute,
		HTTPClient:    &http.Client{Timeout: 5 * time.Second},
		Now:           e.clock.Now,
		Sleep:         e.sleeps.Sleep,
		Logger:        slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Observer:      e.obs,
		FetchTimeout:  10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg, e.st)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b.rand = func() float64 { return 0.5 }
	e.b = b
	t.Cleanup(b.bg.Wait)
	return e
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or a bounded wait ends.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func req(account string, scopes ...string) Request {
	return Request{IrisAppID: testApp, AccountID: account, Scopes: scopes}
}

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }
