package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/internal/service"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// harness is the whole service, as serve assembles it (internal/service),
// on a fresh database, against the simulator, with captured logs.
type harness struct {
	t        *testing.T
	sim      *trackunitsim.Sim
	simURL   string
	dbURL    string
	svc      *service.Service
	pool     *pgxpool.Pool
	store    *store.Store
	keys     *crypto.Keyring
	verifier *identity.Verifier
	public   endpoint
	internal endpoint
	broker   *token.Broker
	logs     *testkit.Buffer
}

// endpoint is one of the service's listeners.
// endpoint is a listener of the harness's service: its URL, and its
// handler for tests that call it in process.
type endpoint struct {
	URL     string
	Handler http.Handler
}

// Bearer tokens of the harness's internal listener.
const (
	internalToken = "internal-token-for-tests"
	adminToken    = "admin-token-for-tests"
)

type harnessOptions struct {
	allowedApps []string
	simOptions  trackunitsim.Options
	// dbURL overrides the database the store talks to (e.g. via a proxy).
	dbURL func(url string) string
	// prepare runs on the simulator before the verifier first loads its keys.
	prepare func(*trackunitsim.Sim)
	// config adjusts the service's configuration.
	config func(*config.Config)
}

// newProxiedHarness is a harness whose store reaches the database through
// a proxy the test can cut.
func newProxiedHarness(t *testing.T) (*harness, *testdb.Proxy) {
	t.Helper()
	var proxy *testdb.Proxy
	h := newHarness(t, harnessOptions{dbURL: func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		proxy = testdb.NewProxy(t, u.Host)
		return proxy.URL(raw)
	}})
	return h, proxy
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, logs: &testkit.Buffer{}}

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
	h.keys = testkit.Keyring(t, testkit.KeySpec)
	h.start(storeURL, o)
	return h
}

// start runs a service for h on storeURL and waits until it is ready.
func (h *harness) start(storeURL string, o harnessOptions) {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := &config.Config{
		DatabaseURL: crypto.Secret(storeURL), DatabaseDirectURL: crypto.Secret(storeURL),
		PublicAddr: "127.0.0.1:0", InternalAddr: "127.0.0.1:0", Keyring: h.keys,
		InternalAPITokens: []crypto.Secret{internalToken}, AdminAPITokens: []crypto.Secret{adminToken},
		JWKSURL: h.simURL + "/api/marketplace/jwks", AuthURL: h.simURL,
		IdentityLeeway: 60 * time.Second, IdentityMaxAge: 10 * time.Minute,
		AllowedAppIDs: o.allowedApps, DefaultScopes: []string{"asset.view"}, TokenRefreshMargin: 5 * time.Minute,
	}
	if o.config != nil {
		o.config(cfg)
	}
	svc, err := service.New(ctx, cfg, service.Deps{
		Logger: logger, TokenHTTP: &http.Client{Timeout: 5 * time.Second},
		TokenSleep: func(context.Context, time.Duration) error { return nil },
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	h.svc, h.pool, h.store, h.verifier, h.broker = svc, svc.Pool, svc.Store, svc.Verifier, svc.Installs
	h.public = endpoint{URL: "http://" + svc.PublicAddr(), Handler: svc.PublicHandler()}
	h.internal = endpoint{URL: "http://" + svc.InternalAddr(), Handler: svc.InternalHandler()}
	testkit.WaitFor(t, "JWKS loaded", h.verifier.Ready)
	// The listener's first connect flushes the token cache, which would
	// otherwise drop tokens a test has just cached.
	testkit.WaitFor(t, "the install-change listener to connect", svc.Ready)
}

// newHarnessOn is a second service instance on the same database and
// simulator as a.
func newHarnessOn(t *testing.T, a *harness) *harness {
	t.Helper()
	b := &harness{t: t, sim: a.sim, simURL: a.simURL, dbURL: a.dbURL, keys: a.keys, logs: &testkit.Buffer{}}
	b.start(a.dbURL, harnessOptions{})
	return b
}

// post sends a callback with the given identity header and raw body.
func (h *harness) post(identityHeader string, body []byte) (int, string) {
	h.t.Helper()
	var header http.Header
	if identityHeader != "" {
		header = http.Header{"Trackunit-Identity": {identityHeader}}
	}
	return testkit.PostJSON(h.t, h.public.URL+"/appinstall", string(body), header)
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
