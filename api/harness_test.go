package api_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/api"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// harness is the public listener wired to a real verifier (against the
// simulator's JWKS), a real store on a fresh database, and captured logs.
type harness struct {
	t        *testing.T
	sim      *trackunitsim.Sim
	simURL   string
	dbURL    string
	pool     *pgxpool.Pool
	store    *store.Store
	keys     *crypto.Keyring
	verifier *identity.Verifier
	public   *httptest.Server
	internal *httptest.Server
	broker   *token.Broker
	logs     *testkit.Buffer
}

// Bearer tokens of the harness's internal listener.
const (
	internalToken = "internal-token-for-tests"
	adminToken    = "admin-token-for-tests"
)

type harnessOptions struct {
	allowedApps []string
	identity    func(*identity.Config)
	simOptions  trackunitsim.Options
	// dbURL overrides the database the store talks to (e.g. via a proxy).
	dbURL func(url string) string
	// prepare runs on the simulator before the verifier first loads its keys.
	prepare func(*trackunitsim.Sim)
	// token adjusts the broker's configuration.
	token func(*token.Config)
}

const testKeys = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h := &harness{t: t, logs: &testkit.Buffer{}}
	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	sim, err := trackunitsim.New(o.simOptions)
	if err != nil {
		t.Fatal(err)
	}
	h.sim = sim
	if o.prepare != nil {
		o.prepare(sim)
	}
	simSrv := httptest.NewServer(sim.Handler())
	t.Cleanup(simSrv.Close)
	h.simURL = simSrv.URL

	h.dbURL = testdb.NewDatabase(t)
	storeURL := h.dbURL
	if o.dbURL != nil {
		storeURL = o.dbURL(h.dbURL)
	}
	pool, err := store.Open(ctx, storeURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	h.pool = pool
	if h.keys, err = crypto.ParseKeyring(testKeys); err != nil {
		t.Fatal(err)
	}
	h.store = store.New(pool, h.keys, store.WithLogger(logger))

	cfg := identity.Config{
		JWKSURL: simSrv.URL + "/api/marketplace/jwks",
		Leeway:  60 * time.Second,
		MaxAge:  10 * time.Minute,
		Logger:  logger,
	}
	if o.identity != nil {
		o.identity(&cfg)
	}
	v, err := identity.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.verifier = v
	done := make(chan struct{})
	go func() { v.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "JWKS loaded", v.Ready)

	profiles := api.NewProfileRecorder(h.store, logger, nil)
	profilesDone := make(chan struct{})
	go func() { profiles.Run(ctx); close(profilesDone) }()
	t.Cleanup(func() { cancel(); <-profilesDone })
	h.public = httptest.NewServer(api.NewPublic(api.PublicDeps{
		Verifier: v, Store: h.store, AllowedApps: o.allowedApps, Logger: logger, Profiles: profiles,
	}))
	t.Cleanup(h.public.Close)

	tcfg := token.Config{
		AuthURL:       simSrv.URL,
		DefaultScopes: []string{"asset.view"},
		HTTPClient:    &http.Client{Timeout: 5 * time.Second},
		Logger:        logger,
		Sleep:         func(context.Context, time.Duration) error { return nil },
	}
	if o.token != nil {
		o.token(&tcfg)
	}
	if h.broker, err = token.New(tcfg, h.store); err != nil {
		t.Fatal(err)
	}
	brokerDone := make(chan struct{})
	go func() { h.broker.Run(ctx); close(brokerDone) }()
	listenDone := startListener(t, ctx, h.store, h.broker)
	t.Cleanup(func() { cancel(); <-brokerDone; <-listenDone })
	h.internal = httptest.NewUnstartedServer(api.NewInternal(api.InternalDeps{
		Verifier: v, Store: h.store, Broker: h.broker,
		InternalTokens: []crypto.Secret{internalToken}, AdminTokens: []crypto.Secret{adminToken},
		AllowedApps: o.allowedApps, Logger: logger, Profiles: h.store,
	}))
	h.internal.Config.Protocols = new(http.Protocols)
	h.internal.Config.Protocols.SetHTTP1(true)
	h.internal.Config.Protocols.SetUnencryptedHTTP2(true)
	h.internal.Start()
	t.Cleanup(h.internal.Close)
	return h
}

// startListener runs the install-change listener, as serve does, and
// returns once it has connected: its first connect flushes the token cache,
// which would otherwise drop tokens a test has just cached.
func startListener(t *testing.T, ctx context.Context, st *store.Store, b *token.Broker) <-chan struct{} {
	t.Helper()
	var connected atomic.Bool
	done := make(chan struct{})
	go func() {
		_ = st.Listen(ctx, b.Invalidate, func() { b.InvalidateAll(); connected.Store(true) })
		close(done)
	}()
	waitFor(t, "the install-change listener to connect", connected.Load)
	return done
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// post sends a callback with the given identity header and raw body.
func (h *harness) post(identityHeader string, body []byte) (int, string) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.public.URL+"/appinstall", bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if identityHeader != "" {
		req.Header.Set("Trackunit-Identity", identityHeader)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// rowCounts is how many installs and events are stored.
func (h *harness) rowCounts() (installs, events int) {
	h.t.Helper()
	ctx := context.Background()
	if err := h.pool.QueryRow(ctx, "SELECT count(*) FROM installs").Scan(&installs); err != nil {
		h.t.Fatal(err)
	}
	if err := h.pool.QueryRow(ctx, "SELECT count(*) FROM install_events").Scan(&events); err != nil {
		h.t.Fatal(err)
	}
	return installs, events
}

func (h *harness) assertNothingStored() {
	h.t.Helper()
	if i, e := h.rowCounts(); i != 0 || e != 0 {
		h.t.Errorf("stored %d installs and %d events, want none", i, e)
	}
}

// dump is a pg_dump equivalent: every row of every table of the public
// schema as text.
func (h *harness) dump() string {
	h.t.Helper()
	ctx := context.Background()
	rows, err := h.pool.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
	if err != nil {
		h.t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			h.t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	var sb strings.Builder
	for _, table := range tables {
		rows, err := h.pool.Query(ctx, "SELECT t::text FROM "+table+" t")
		if err != nil {
			h.t.Fatal(err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				h.t.Fatal(err)
			}
			sb.WriteString(table + ": " + line + "\n")
		}
		rows.Close()
	}
	return sb.String()
}
