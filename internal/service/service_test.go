package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/derrors"
	"github.com/irisx-broker/irisx-broker/internal/service"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

const (
	testApp = "@irisx/service-test"
)

// fleet is a database and a simulator shared by any number of instances.
type fleet struct {
	t      *testing.T
	dbURL  string
	sim    *trackunitsim.Sim
	simURL string
	logs   *testkit.Buffer
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	sim, err := trackunitsim.New(trackunitsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	return &fleet{t: t, dbURL: testdb.NewDatabase(t), sim: sim, simURL: srv.URL, logs: &testkit.Buffer{}}
}

type instance struct {
	*service.Service
	stop func()
}

// start runs one instance and waits until it is ready.
func (f *fleet) start(mod func(*config.Config)) *instance {
	f.t.Helper()
	keys := testkit.Keyring(f.t, testkit.KeySpec)
	cfg := &config.Config{
		DatabaseURL: crypto.Secret(f.dbURL), PublicAddr: "127.0.0.1:0", InternalAddr: "127.0.0.1:0", Keyring: keys,
		InternalAPITokens: []crypto.Secret{"internal"}, AdminAPITokens: []crypto.Secret{"admin"},
		JWKSURL: f.simURL + "/api/marketplace/jwks", AuthURL: f.simURL,
		IdentityLeeway: time.Minute, IdentityMaxAge: 10 * time.Minute,
		AllowedAppIDs: []string{testApp}, DefaultScopes: []string{"asset.view"}, TokenRefreshMargin: 5 * time.Minute,
	}
	if mod != nil {
		mod(cfg)
	}
	logger := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := service.New(ctx, cfg, service.Deps{Logger: logger, TokenHTTP: &http.Client{Timeout: 5 * time.Second},
		TokenSleep: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		cancel()
		f.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	var once sync.Once
	in := &instance{Service: svc, stop: func() { once.Do(func() { cancel(); <-done }) }}
	f.t.Cleanup(in.stop)
	testkit.WaitFor(f.t, "the instance to be ready", func() bool { return svc.Verifier.Ready() && svc.Ready() })
	return in
}

// install stores an install whose credentials the simulator accepts.
func (f *fleet) install(in *instance, account string) string {
	f.t.Helper()
	id, secret := trackunitsim.NewClientCredentials()
	f.sim.AddClient(id, secret, nil)
	if _, err := in.Store.ApplyInstallEvent(context.Background(), store.InstallEvent{Type: store.TypeInstalled,
		IrisAppID: testApp, AccountID: account, ClientID: crypto.Secret(id), ClientSecret: secret}); err != nil {
		f.t.Fatal(err)
	}
	return id
}

// stampede runs n concurrent callers spread over the instances and returns
// how many got each answer.
func stampede(n int, ins []*instance, call func(in *instance) (string, error)) map[string]int {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[string]int{}
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tok, err := call(ins[i%len(ins)])
			if err != nil {
				tok = "error: " + err.Error()
			}
			mu.Lock()
			seen[tok]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return seen
}

func one(t *testing.T, what string, seen map[string]int, n int) string {
	t.Helper()
	if len(seen) != 1 {
		var answers []string
		for k, c := range seen {
			if !strings.HasPrefix(k, "error: ") {
				k = "a token"
			}
			answers = append(answers, fmt.Sprintf("%s ×%d", k, c))
		}
		t.Fatalf("%s: %d different answers (%s), want one token for all %d callers", what, len(seen), strings.Join(answers, "; "), n)
	}
	for tok := range seen {
		if strings.HasPrefix(tok, "error: ") {
			t.Fatalf("%s: every caller failed: %s", what, tok)
		}
		return tok
	}
	return ""
}

// Three instances on one database mint one token for 1,000 cold callers,
// for each credential kind; a restarted instance serves the shared token
// without a mint.
func TestFleetMintsOncePerKind(t *testing.T) {
	f := newFleet(t)
	ins := []*instance{f.start(nil), f.start(nil), f.start(nil)}
	ctx := context.Background()
	const n = 1000

	account := uuid.NewString()
	f.install(ins[0], account)
	installTok := one(t, "install", stampede(n, ins, func(in *instance) (string, error) {
		tok, err := in.Installs.Token(ctx, token.Request{IrisAppID: testApp, AccountID: account})
		return tok.AccessToken.Reveal(), err
	}), n)
	if got := f.sim.Calls(trackunitsim.EndpointAppToken); got != 1 {
		t.Errorf("install: %d /apptoken calls for %d callers on 3 instances, want 1", got, n)
	}

	keyID, keySecret := trackunitsim.NewClientCredentials()
	f.sim.AddAPIKey(keyID, keySecret, []string{"asset.view", "account.view"})
	if _, err := ins[0].Store.CreateAPIKey(ctx, store.NewAPIKey{Name: "reports", ClientID: crypto.Secret(keyID),
		ClientSecret: keySecret, Scopes: []string{"asset.view", "account.view"}}); err != nil {
		t.Fatal(err)
	}
	keyTok := one(t, "API key", stampede(n, ins, func(in *instance) (string, error) {
		tok, err := in.APIKeys.Token(ctx, "reports", nil, 0)
		return tok.AccessToken.Reveal(), err
	}), n)
	if got := f.sim.Calls(trackunitsim.EndpointTokenV2); got != 1 {
		t.Errorf("API key: %d /token/v2 calls for %d callers on 3 instances, want 1", got, n)
	}

	userClient, userSecret := trackunitsim.NewClientCredentials()
	f.sim.AddUser("ops@example.com", "pw", userClient, userSecret)
	if _, err := ins[0].Store.CreateAPIUser(ctx, store.NewAPIUser{Name: "ops", Username: "ops@example.com",
		Password: "pw", ClientID: crypto.Secret(userClient), ClientSecret: userSecret}); err != nil {
		t.Fatal(err)
	}
	userTok := one(t, "API user", stampede(n, ins, func(in *instance) (string, error) {
		tok, err := in.APIUsers.Token(ctx, "ops", 0)
		return tok.AccessToken.Reveal(), err
	}), n)
	if got := f.sim.Calls(trackunitsim.EndpointToken); got != 1 {
		t.Errorf("API user: %d /token calls for %d callers on 3 instances, want 1", got, n)
	}

	// Restart one instance: its memory is empty, the database is not.
	ins[2].stop()
	restarted := f.start(nil)
	for what, got := range map[string]func() (string, error){
		installTok: func() (string, error) {
			tok, err := restarted.Installs.Token(ctx, token.Request{IrisAppID: testApp, AccountID: account})
			return tok.AccessToken.Reveal(), err
		},
		keyTok: func() (string, error) {
			tok, err := restarted.APIKeys.Token(ctx, "reports", nil, 0)
			return tok.AccessToken.Reveal(), err
		},
		userTok: func() (string, error) {
			tok, err := restarted.APIUsers.Token(ctx, "ops", 0)
			return tok.AccessToken.Reveal(), err
		},
	} {
		tok, err := got()
		if err != nil || tok != what {
			t.Errorf("restarted instance: err %v, same token %v; want the shared token", err, tok == what)
		}
	}
	for _, ep := range []string{trackunitsim.EndpointAppToken, trackunitsim.EndpointTokenV2, trackunitsim.EndpointToken} {
		if got := f.sim.Calls(ep); got != 1 {
			t.Errorf("after the restart: %d %s calls, want still 1", got, ep)
		}
	}
	if strings.Contains(f.logs.String(), installTok) || strings.Contains(f.logs.String(), keySecret.Reveal()) {
		t.Error("a token or secret reached the logs")
	}
}

// API keys: a scope outside the key's is invalid_argument with no upstream
// call; a key Trackunit revoked is failed_precondition, then no further
// upstream call.
func TestAPIKeyScopesAndRevocation(t *testing.T) {
	f := newFleet(t)
	in := f.start(nil)
	ctx := context.Background()
	keyID, keySecret := trackunitsim.NewClientCredentials()
	f.sim.AddAPIKey(keyID, keySecret, []string{"asset.view", "account.view"})
	if _, err := in.Store.CreateAPIKey(ctx, store.NewAPIKey{Name: "k", ClientID: crypto.Secret(keyID),
		ClientSecret: keySecret, Scopes: []string{"asset.view"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.APIKeys.Token(ctx, "k", []string{"account.view"}, 0); !errors.Is(err, derrors.ErrInvalid) {
		t.Errorf("scope outside the key's: %v, want invalid", err)
	}
	if got := f.sim.Calls(trackunitsim.EndpointTokenV2); got != 0 {
		t.Errorf("scope outside the key's made %d upstream calls, want 0", got)
	}
	tok, err := in.APIKeys.Token(ctx, "k", []string{"asset.view"}, 0)
	if err != nil || !f.sim.ValidAccessToken(tok.AccessToken.Reveal()) {
		t.Fatalf("token: %v", err)
	}
	if left := time.Until(tok.ExpiresAt); left > 1200*time.Second || left < 1100*time.Second {
		t.Errorf("API key token lives %v, want 1200 s", left)
	}

	f.sim.RevokeAPIKey(keyID)
	// A new scope set cannot come from the cache: it is minted and refused.
	if _, err := in.Store.CreateAPIKey(ctx, store.NewAPIKey{Name: "k", ClientID: crypto.Secret(keyID),
		ClientSecret: keySecret, Scopes: []string{"asset.view"}}); err != nil {
		t.Fatal(err)
	}
	in.APIKeys.Invalidate("k")
	if _, err := in.APIKeys.Token(ctx, "k", nil, 0); !errors.Is(err, token.ErrAPIKeyRejected) || !errors.Is(err, derrors.ErrRejected) {
		t.Fatalf("revoked key: %v, want rejected", err)
	}
	calls := f.sim.Calls(trackunitsim.EndpointTokenV2)
	for range 5 {
		if _, err := in.APIKeys.Token(ctx, "k", nil, 0); !errors.Is(err, token.ErrAPIKeyRejected) {
			t.Fatalf("later call: %v", err)
		}
	}
	if got := f.sim.Calls(trackunitsim.EndpointTokenV2); got != calls {
		t.Errorf("a rejected key made %d more upstream calls, want 0", got-calls)
	}
	keys, err := in.Store.ListAPIKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].Status != store.APIUserCredentialsRejected || len(keys[0].ClientIDHint) > 4 {
		t.Errorf("listed keys: %+v %v", keys, err)
	}
}

// On cancel /readyz turns 503 at once while requests are still served for
// SHUTDOWN_DRAIN; keep-alive clients that stop when it does see no failure.
func TestShutdownDrainsWithoutFailedRequests(t *testing.T) {
	f := newFleet(t)
	in := f.start(func(c *config.Config) { c.ShutdownDrain = 700 * time.Millisecond })
	base := "http://" + in.PublicAddr()
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (int, error) {
		resp, err := client.Get(base + path)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	var (
		stop           atomic.Bool
		ok, failed     atomic.Int64
		wg             sync.WaitGroup
		sawNotReady    atomic.Bool
		notReadyBefore atomic.Bool
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if code, err := get("/healthz"); err != nil || code != http.StatusOK {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	if code, _ := get("/readyz"); code != http.StatusOK {
		notReadyBefore.Store(true)
	}
	go in.stop()
	// The load balancer notices /readyz and stops sending, well within the
	// drain.
	testkit.WaitFor(t, "/readyz to turn 503", func() bool {
		code, err := get("/readyz")
		if err == nil && code == http.StatusServiceUnavailable {
			sawNotReady.Store(true)
		}
		return sawNotReady.Load()
	})
	time.Sleep(200 * time.Millisecond) // requests still served meanwhile
	stop.Store(true)
	wg.Wait()
	if notReadyBefore.Load() {
		t.Error("/readyz was not 200 before the shutdown")
	}
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("during the drain: %d requests ok, %d failed; want none failed", ok.Load(), failed.Load())
	}
}

// With /token hanging for 20 API users and /apptoken for 50 installs, on a
// pool of 4 connections, callbacks, listings and /readyz keep answering:
// no connection is held while Trackunit answers, and no session sits idle
// in a transaction.
func TestHangingTrackunitDoesNotStarveThePool(t *testing.T) {
	f := newFleet(t)
	in := f.start(func(c *config.Config) { c.DatabaseURL = crypto.Secret(f.dbURL + "&pool_max_conns=4") })
	ctx := context.Background()
	accounts := make([]string, 50)
	for i := range accounts {
		accounts[i] = uuid.NewString()
		f.install(in, accounts[i])
	}
	for i := range 20 {
		id, secret := trackunitsim.NewClientCredentials()
		user := fmt.Sprintf("u%d@example.com", i)
		f.sim.AddUser(user, "pw", id, secret)
		if _, err := in.Store.CreateAPIUser(ctx, store.NewAPIUser{Name: fmt.Sprintf("u%d", i), Username: user,
			Password: "pw", ClientID: crypto.Secret(id), ClientSecret: secret}); err != nil {
			t.Fatal(err)
		}
	}
	f.sim.InjectFault(trackunitsim.EndpointToken, trackunitsim.Fault{Hang: true})
	f.sim.InjectFault(trackunitsim.EndpointAppToken, trackunitsim.Fault{Hang: true})
	hctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = in.APIUsers.Token(hctx, fmt.Sprintf("u%d", i), 0) }()
	}
	for _, a := range accounts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = in.Installs.Token(hctx, token.Request{IrisAppID: testApp, AccountID: a})
		}()
	}
	time.Sleep(500 * time.Millisecond) // every call is now waiting on Trackunit

	timed := func(what string, fn func() error) {
		t.Helper()
		start := time.Now()
		err := fn()
		if d := time.Since(start); err != nil || d > time.Second {
			t.Errorf("%s while Trackunit hangs: %v after %v, want an answer within 1 s", what, err, d)
		}
	}
	timed("an install callback", func() error {
		_, err := in.Store.ApplyInstallEvent(ctx, store.InstallEvent{Type: store.TypeUninstalled, IrisAppID: testApp, AccountID: accounts[0]})
		return err
	})
	timed("ListInstalls", func() error { _, err := in.Store.ListInstalls(ctx, store.ListFilter{Limit: 10}); return err })
	timed("/readyz", func() error {
		resp, err := http.Get("http://" + in.PublicAddr() + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	// A call holding a transaction open across the hang would be idle in
	// transaction in every sample; a background transaction (River's
	// periodic enqueuer, say) caught between two statements is gone by the
	// next one.
	held := idleInTransaction(ctx, t, in.Pool)
	for range 4 {
		time.Sleep(50 * time.Millisecond)
		now := idleInTransaction(ctx, t, in.Pool)
		for pid := range held {
			if _, ok := now[pid]; !ok {
				delete(held, pid)
			}
		}
	}
	for pid, query := range held {
		t.Errorf("session %d idle in transaction throughout the samples while Trackunit hangs, last query %q; want none", pid, query)
	}
	cancel()
	wg.Wait()
}

// idleInTransaction is the sessions of the test database idle in a
// transaction now, by pid, with their last query.
func idleInTransaction(ctx context.Context, t *testing.T, pool *pgxpool.Pool) map[int]string {
	t.Helper()
	rows, _ := pool.Query(ctx, `SELECT pid, query FROM pg_stat_activity
		WHERE datname = current_database() AND state LIKE 'idle in transaction%'`)
	idle := map[int]string{}
	var pid int
	var query string
	if _, err := pgx.ForEachRow(rows, []any{&pid, &query}, func() error { idle[pid] = query; return nil }); err != nil {
		t.Fatal(err)
	}
	return idle
}

// A deaf replica: its LISTEN connection is cut and its role can no longer
// log in. /readyz turns 503, a warning is logged, and an UNINSTALLED
// committed through another replica refuses the cached token there within
// about a second.
func TestDeafReplicaDoesNotFailOpen(t *testing.T) {
	f := newFleet(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, f.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	role := "deaf_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	for _, q := range []string{
		"CREATE ROLE " + role + " LOGIN",
		"GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role,
		"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO " + role,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		c := context.Background()
		_, _ = admin.Exec(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
		_, _ = admin.Exec(c, "DROP OWNED BY "+role)
		_, _ = admin.Exec(c, "DROP ROLE "+role)
	})
	u, err := url.Parse(f.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	a := f.start(nil)
	deaf := f.start(func(c *config.Config) { c.DatabaseURL = crypto.Secret(u.String()) })

	account := uuid.NewString()
	f.install(a, account)
	req := token.Request{IrisAppID: testApp, AccountID: account}
	if _, err := deaf.Installs.Token(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "ALTER ROLE "+role+" NOLOGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE usename = $1 AND application_name = $2`, role, store.ListenApplicationName); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the deaf replica to report not ready", func() bool {
		resp, err := http.Get("http://" + deaf.PublicAddr() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	if !strings.Contains(f.logs.String(), "install change listener disconnected") {
		t.Error("losing the listener logged no warning")
	}
	if _, err := deaf.Installs.Token(ctx, req); err != nil {
		t.Fatalf("the cached token, still current, was refused: %v", err)
	}
	if _, err := a.Store.ApplyInstallEvent(ctx, store.InstallEvent{Type: store.TypeUninstalled, IrisAppID: testApp, AccountID: account}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testkit.WaitFor(t, "the deaf replica to refuse the uninstalled install", func() bool {
		_, err := deaf.Installs.Token(ctx, req)
		return errors.Is(err, token.ErrUninstalled)
	})
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("the deaf replica served the revoked token for %v, want about 1 s at most", d)
	}
}

// Read your writes: a new INSTALLED answered by a replica is never followed
// there by a token of the credentials it replaced, 100 times over.
func TestReadYourWrites(t *testing.T) {
	f := newFleet(t)
	in := f.start(nil)
	ctx := context.Background()
	account := uuid.NewString()
	req := token.Request{IrisAppID: testApp, AccountID: account}
	for i := range 100 {
		id := f.install(in, account)
		tok, err := in.Installs.Token(ctx, req)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		info, ok := f.sim.TokenInfo(tok.AccessToken.Reveal())
		if !ok || info.Subject != id {
			t.Fatalf("round %d: the token is of other credentials than the install just stored", i)
		}
	}
}
