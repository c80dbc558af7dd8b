package token

import (
	"context"
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
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

const (
	testApp    = "@acme/fleet"
	testSecret = "sEcReT-wZtQppu1huik4cYBAhYXnZS29"
)

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeStore is an in-memory Store; each install it stores is a client of
// sim, when set.
type fakeStore struct {
	sim       *trackunitsim.Sim
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
	if s.sim != nil {
		s.sim.AddClient(clientIDFor(account), crypto.Secret(secret), nil)
	}
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

// reply is one scripted upstream answer: a simulator fault, Raw for an
// exact status, header and body.
type reply = trackunitsim.Fault

// testScopes are the scopes the simulator grants a test install: Trackunit's
// app scopes and a few short ones.
var testScopes = append(trackunitsim.AppScopes(), "a.view", "b.view", "c.view")

// seenRequest is what the token endpoint received.
type seenRequest struct {
	ClientID, ClientSecret, GrantType, Scope string
	AuthHeader                               bool
}

// upstream is the Trackunit simulator serving /apptoken to the broker under
// test, with its faults and its record of requests; its clock is the
// test's.
type upstream struct {
	sim *trackunitsim.Sim
	url string

	mu       sync.Mutex
	release  func() // of the current Hold
	consumed int    // arrivals waitReceived has returned
}

func newUpstream(t testing.TB, now func() time.Time) *upstream {
	sim, err := trackunitsim.New(trackunitsim.Options{Now: now, RecordRequests: true, AllowedScopes: testScopes})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	u := &upstream{sim: sim, url: srv.URL}
	t.Cleanup(func() {
		u.open()
		sim.Close()
		srv.Close()
	})
	return u
}

// calls is how many requests reached /apptoken.
func (u *upstream) calls() int64 { return int64(u.sim.Calls(trackunitsim.EndpointAppToken)) }

// token is the access token answered to the n-th request (from 1), "" when
// it got none.
func (u *upstream) token(n int) string {
	rs := u.sim.Requests(trackunitsim.EndpointAppToken)
	if n < 1 || n > len(rs) {
		return ""
	}
	return rs[n-1].AccessToken
}

// issued is every access token /apptoken answered with.
func (u *upstream) issued() []string {
	var out []string
	for _, r := range u.sim.Requests(trackunitsim.EndpointAppToken) {
		if r.AccessToken != "" {
			out = append(out, r.AccessToken)
		}
	}
	return out
}

// hold keeps the answers of requests until open.
func (u *upstream) hold() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.release == nil {
		u.release = u.sim.Hold(trackunitsim.EndpointAppToken)
	}
}

func (u *upstream) open() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.release != nil {
		u.release()
		u.release = nil
	}
}

// setScript answers the next requests with rs, one each, then normally.
func (u *upstream) setScript(rs ...reply) {
	u.sim.InjectFaults(trackunitsim.EndpointAppToken, rs...)
}

// setAlways answers every request with r until it is set again; nil
// answers normally.
func (u *upstream) setAlways(r *reply) {
	if r == nil {
		u.sim.ClearFaults()
		return
	}
	u.sim.InjectFault(trackunitsim.EndpointAppToken, *r)
}

func (u *upstream) setLifetime(s int) { u.sim.SetTokenTTL(time.Duration(s) * time.Second) }

func (u *upstream) getSeen() []seenRequest {
	var out []seenRequest
	for _, r := range u.sim.Requests(trackunitsim.EndpointAppToken) {
		out = append(out, seenRequest{ClientID: r.ClientID, ClientSecret: r.ClientSecret.Reveal(),
			GrantType: r.GrantType, Scope: r.Scope, AuthHeader: r.BasicAuth})
	}
	return out
}

// waitReceived waits for the next request to arrive at the endpoint and
// returns its number.
func (u *upstream) waitReceived(t *testing.T) int {
	t.Helper()
	u.mu.Lock()
	u.consumed++
	n := u.consumed
	u.mu.Unlock()
	testkit.WaitFor(t, "an upstream request", func() bool { return u.calls() >= int64(n) })
	return n
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
	up     *upstream
	clock  *testkit.Clock
	sleeps *sleepRec
	obs    *fakeObs
	logs   *testkit.Buffer
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	e := &env{st: newFakeStore(), clock: testkit.NewClock(epoch),
		sleeps: &sleepRec{}, obs: &fakeObs{}, logs: &testkit.Buffer{}}
	e.up = newUpstream(t, e.clock.Now)
	e.st.sim = e.up.sim
	cfg := Config{
		AuthURL:       e.up.url + "/",
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

func req(account string, scopes ...string) Request {
	return Request{IrisAppID: testApp, AccountID: account, Scopes: scopes}
}

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }
