package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/service"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/migrations"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// The service-level PgBouncer suite: whole services (service.New and Run,
// the simulator as Trackunit) deployed as docs/DEPLOY.md says, with
// DATABASE_URL through Debian's real pgbouncer in pool_mode=transaction and
// DATABASE_DIRECT_URL straight to Postgres. The bouncer keeps
// testdb.PgBouncerPoolSize (4) server connections for each instance's 16
// pool connections, so one instance's transactions really move between
// server connections. Under CI=true a missing pgbouncer fails these tests
// (testdb.StartPgBouncer); it never skips them.

// pooled routes DATABASE_URL through b and keeps DATABASE_DIRECT_URL direct.
func (f *fleet) pooled(b *testdb.PgBouncer) func(*config.Config) {
	return func(c *config.Config) {
		c.DatabaseURL = crypto.Secret(b.URL(f.dbURL))
		c.DatabaseDirectURL = crypto.Secret(f.dbURL)
	}
}

// checkPooled fails unless in's pool really connects to the bouncer.
func checkPooled(t *testing.T, in *instance, b *testdb.PgBouncer) {
	t.Helper()
	_, port, _ := net.SplitHostPort(b.Addr)
	if got := in.Pool.Config().ConnConfig.Port; strconv.Itoa(int(got)) != port {
		t.Fatalf("the pool connects to port %d, not the bouncer's %s", got, port)
	}
}

// serverSessions counts the client sessions Postgres has on dbURL's
// database besides the LISTEN connection and the caller's own.
func serverSessions(t *testing.T, admin *pgx.Conn) int {
	t.Helper()
	var n int
	if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND backend_type = 'client backend'
		AND application_name <> $1 AND pid <> pg_backend_pid()`,
		store.ListenApplicationName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func connect(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// workers runs fn(i) for i in [0, n) on 16 goroutines.
func workers(n int, fn func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// getToken calls GetToken over HTTP/1.1 with the Connect JSON protocol, as
// the contract's curl example does, and returns the status and the token.
func getToken(client *http.Client, in *instance, account string) (int, string, error) {
	body := `{"irisAppId":"` + testApp + `","accountId":"` + account + `"}`
	req, err := http.NewRequest(http.MethodPost, "http://"+in.InternalAddr()+"/irisx.broker.v1.TokenService/GetToken", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer internal")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", err
	}
	var m struct {
		AccessToken string `json:"accessToken"`
		Message     string `json:"message"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return resp.StatusCode, "", fmt.Errorf("non-JSON answer %q", raw)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, "", errors.New(m.Message)
	}
	return resp.StatusCode, m.AccessToken, nil
}

// 100 install callbacks signed by the simulator, all at once through the
// public listener, are all answered 200 and stored; then 500 GetToken calls
// over the internal listener all succeed with the install's own token.
// On main before issue 11 the statement cache made 42 of 100 installs and
// 267 of 500 GetToken calls answer 503 through this bouncer.
func TestPgBouncerCallbacksAndGetToken(t *testing.T) {
	f := newFleet(t)
	b := testdb.StartPgBouncer(t)
	in := f.start(f.pooled(b))
	checkPooled(t, in, b)
	ctx := context.Background()
	admin := connect(t, f.dbURL)

	const installs, calls = 100, 500
	accounts := make([]string, installs)
	clients := make([]string, installs)
	statuses := make([]int, installs)
	for i := range accounts {
		accounts[i] = uuid.NewString()
	}
	callback := "http://" + in.PublicAddr() + "/appinstall"
	workers(installs, func(i int) {
		id, secret := trackunitsim.NewClientCredentials()
		clients[i] = id
		status, body, err := f.sim.SendInstall(ctx, callback, trackunitsim.InstallEvent{Type: trackunitsim.EventInstalled,
			IrisAppID: testApp, AccountID: accounts[i], ClientID: id, ClientSecret: secret}, "")
		if err != nil || status != http.StatusOK {
			t.Errorf("callback %d: %d %s %v", i, status, body, err)
		}
		statuses[i] = status
	})
	ok := 0
	for _, s := range statuses {
		if s == http.StatusOK {
			ok++
		}
	}
	var stored int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM installs WHERE iris_app_id = $1 AND status = $2`, testApp, store.StatusInstalled).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	t.Logf("install callbacks through PgBouncer: %d of %d answered 200, %d stored", ok, installs, stored)
	if ok != installs || stored != installs {
		t.Fatalf("%d of %d callbacks answered 200 and %d installs are stored, want all\n%s", ok, installs, stored, b.Log())
	}

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var got503, failed atomic.Int64
	workers(calls, func(i int) {
		status, tok, err := getToken(client, in, accounts[i%installs])
		switch {
		case status == http.StatusServiceUnavailable:
			got503.Add(1)
			failed.Add(1)
			t.Errorf("GetToken %d: 503 %v", i, err)
		case err != nil:
			failed.Add(1)
			t.Errorf("GetToken %d: %d %v", i, status, err)
		default:
			if info, ok := f.sim.TokenInfo(tok); !ok || info.Subject != clients[i%installs] {
				failed.Add(1)
				t.Errorf("GetToken %d: not a token of the install's own credentials", i)
			}
		}
	})
	t.Logf("GetToken through PgBouncer: %d of %d calls failed, %d answered 503", failed.Load(), calls, got503.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d of %d GetToken calls failed (%d 503s)\n%s", failed.Load(), calls, got503.Load(), b.Log())
	}
	if got := f.sim.Calls(trackunitsim.EndpointAppToken); got != installs {
		t.Errorf("%d /apptoken calls for %d installs, want one each", got, installs)
	}
	// Postgres saw the bouncer's few server connections, not the pool's 16.
	if n := serverSessions(t, admin); n > testdb.PgBouncerPoolSize {
		t.Errorf("%d server sessions on the database, want at most the bouncer's %d", n, testdb.PgBouncerPoolSize)
	}
}

// Two instances on one database through the bouncer: a new INSTALLED
// with new credentials, then an UNINSTALLED, each answered by instance A,
// make instance B renew, then refuse, the token it has cached within about
// a second, while B's listener (on the direct URL) stays confirmed: B
// heard the change by LISTEN, not by its deaf-replica fallback.
func TestPgBouncerCrossReplicaInvalidation(t *testing.T) {
	f := newFleet(t)
	b := testdb.StartPgBouncer(t)
	a, bIn := f.start(f.pooled(b)), f.start(f.pooled(b))
	checkPooled(t, bIn, b)
	ctx := context.Background()
	account := uuid.NewString()
	req := token.Request{IrisAppID: testApp, AccountID: account}
	callback := "http://" + a.PublicAddr() + "/appinstall"
	send := func(ev trackunitsim.InstallEvent) {
		t.Helper()
		if status, body, err := f.sim.SendInstall(ctx, callback, ev, ""); err != nil || status != http.StatusOK {
			t.Fatalf("%s through instance A: %d %s %v", ev.Type, status, body, err)
		}
	}
	subject := func(tok token.Token) string {
		info, _ := f.sim.TokenInfo(tok.AccessToken.Reveal())
		return info.Subject
	}

	oldID, oldSecret := trackunitsim.NewClientCredentials()
	send(trackunitsim.InstallEvent{Type: trackunitsim.EventInstalled, IrisAppID: testApp, AccountID: account, ClientID: oldID, ClientSecret: oldSecret})
	cached, err := bIn.Installs.Token(ctx, req)
	if err != nil || subject(cached) != oldID {
		t.Fatalf("instance B: %v, want a token of the first credentials", err)
	}
	if again, err := bIn.Installs.Token(ctx, req); err != nil || again.AccessToken != cached.AccessToken {
		t.Fatalf("instance B did not serve its cached token: %v", err)
	}

	newID, newSecret := trackunitsim.NewClientCredentials()
	send(trackunitsim.InstallEvent{Type: trackunitsim.EventInstalled, IrisAppID: testApp, AccountID: account, ClientID: newID, ClientSecret: newSecret})
	start := time.Now()
	testkit.WaitFor(t, "instance B to serve a token of the new credentials", func() bool {
		tok, err := bIn.Installs.Token(ctx, req)
		return err == nil && subject(tok) == newID
	})
	renewed := time.Since(start)
	if !bIn.Store.ListenerConfirmed() || !bIn.Ready() {
		t.Error("instance B's listener is not confirmed: the change may have been found by the fallback, not LISTEN")
	}

	send(trackunitsim.InstallEvent{Type: trackunitsim.EventUninstalled, IrisAppID: testApp, AccountID: account})
	start = time.Now()
	testkit.WaitFor(t, "instance B to refuse the uninstalled install", func() bool {
		_, err := bIn.Installs.Token(ctx, req)
		return errors.Is(err, token.ErrUninstalled)
	})
	refused := time.Since(start)
	if !bIn.Store.ListenerConfirmed() || !bIn.Ready() {
		t.Error("instance B's listener is not confirmed after the uninstall")
	}
	t.Logf("through PgBouncer, instance B renewed after %v and refused after %v", renewed, refused)
	if renewed > time.Second || refused > time.Second {
		t.Errorf("instance B served the replaced token for %v and the uninstalled one for %v, want at most about 1 s", renewed, refused)
	}
}

// The control: with LISTEN through the transaction pooler too
// (DATABASE_DIRECT_URL pointing at the bouncer), the other instance never
// hears of new credentials and keeps serving the replaced ones while its
// listener looks alive. The test above passes because of the direct URL.
func TestPgBouncerListenThroughThePoolerIsDeaf(t *testing.T) {
	f := newFleet(t)
	b := testdb.StartPgBouncer(t)
	bounced := b.URL(f.dbURL)
	deafConfig := func(c *config.Config) {
		// A different string from DATABASE_URL, so the service takes it
		// for a direct URL and sends no statement_timeout to the bouncer.
		c.DatabaseURL = crypto.Secret(bounced + "&pool_max_conns=16")
		c.DatabaseDirectURL = crypto.Secret(bounced)
	}
	a, deaf := f.start(f.pooled(b)), f.start(deafConfig)
	ctx := context.Background()
	account := uuid.NewString()
	req := token.Request{IrisAppID: testApp, AccountID: account}
	oldID := f.install(a, account)
	if tok, err := deaf.Installs.Token(ctx, req); err != nil {
		t.Fatal(err)
	} else if info, _ := f.sim.TokenInfo(tok.AccessToken.Reveal()); info.Subject != oldID {
		t.Fatal("not a token of the first credentials")
	}
	f.install(a, account) // new credentials, committed through A
	time.Sleep(2 * time.Second)
	tok, err := deaf.Installs.Token(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.sim.TokenInfo(tok.AccessToken.Reveal())
	if info.Subject != oldID {
		t.Fatal("LISTEN through the transaction pooler heard the change: is the bouncer pooling by transaction?")
	}
	if !deaf.Ready() {
		t.Error("the deaf instance reports not ready; the point is that it looks alive")
	}
}

// fakeClock is a clock the simulator and the instances share, moved by
// the test.
type fakeClock struct{ off atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// An API user's expired token, asked for by 200 callers on two instances
// through the bouncer, is refreshed once fleet-wide: one refresh_token
// grant, no second password grant, no spent refresh token reused.
func TestPgBouncerAPIUserRefreshOnceFleetWide(t *testing.T) {
	clock := &fakeClock{}
	sim, err := trackunitsim.New(trackunitsim.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	f := &fleet{t: t, dbURL: testdb.NewDatabase(t), sim: sim, simURL: srv.URL, logs: &testkit.Buffer{}}
	b := testdb.StartPgBouncer(t)
	ins := make([]*instance, 2)
	for i := range ins {
		ins[i] = runInstance(t, f, f.pooled(b), service.Deps{Now: clock.Now})
	}
	checkPooled(t, ins[1], b)
	ctx := context.Background()

	const user = "ops@example.com"
	id, secret := trackunitsim.NewClientCredentials()
	sim.AddUser(user, "pw", id, secret)
	if _, err := ins[0].Store.CreateAPIUser(ctx, store.NewAPIUser{Name: "ops", Username: user,
		Password: "pw", ClientID: crypto.Secret(id), ClientSecret: secret}); err != nil {
		t.Fatal(err)
	}
	first, err := ins[1].APIUsers.Token(ctx, "ops", 0)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour) // the access token has expired
	const n = 200
	seen := stampede(n, ins, func(in *instance) (string, error) {
		tok, err := in.APIUsers.Token(ctx, "ops", 0)
		return tok.AccessToken.Reveal(), err
	})
	refreshed := one(t, "API user refresh through PgBouncer", seen, n)
	if refreshed == first.AccessToken.Reveal() || !sim.ValidAccessToken(refreshed) {
		t.Error("the callers did not get a new, valid token")
	}
	refreshes, passwords := sim.UserCalls(user, trackunitsim.GrantRefreshToken), sim.UserCalls(user, trackunitsim.GrantPassword)
	t.Logf("through PgBouncer, %d callers on 2 instances: %d refresh_token grant(s), %d password grant(s)", n, refreshes, passwords)
	if refreshes != 1 || passwords != 1 || sim.SpentRefreshReuse() != 0 {
		t.Errorf("%d refresh grants, %d password grants, %d spent refresh tokens reused; want 1, 1 (the first token), 0",
			refreshes, passwords, sim.SpentRefreshReuse())
	}
}

// runInstance builds an instance of f with service.New, as start does but
// with deps (Now, Migrate) of the test's, runs it and waits until it is
// ready.
func runInstance(t *testing.T, f *fleet, mod func(*config.Config), deps service.Deps) *instance {
	t.Helper()
	svc, err := newService(f, mod, deps)
	if err != nil {
		t.Fatal(err)
	}
	return run(t, svc)
}

func newService(f *fleet, mod func(*config.Config), deps service.Deps) (*service.Service, error) {
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
	deps.Logger = slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	deps.TokenHTTP = &http.Client{Timeout: 5 * time.Second}
	deps.TokenSleep = func(context.Context, time.Duration) error { return nil }
	return service.New(context.Background(), cfg, deps)
}

func run(t *testing.T, svc *service.Service) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	var once sync.Once
	in := &instance{Service: svc, stop: func() { once.Do(func() { cancel(); <-done }) }}
	t.Cleanup(in.stop)
	testkit.WaitFor(t, "the instance to be ready", func() bool { return svc.Verifier.Ready() && svc.Ready() })
	return in
}

// latestMigration is the newest embedded migration's version.
func latestMigration(t *testing.T) uint {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("no embedded migrations: %v", err)
	}
	var latest uint
	for _, name := range names {
		v, err := strconv.ParseUint(name[:strings.IndexByte(name, '_')], 10, 32)
		if err != nil {
			t.Fatalf("migration %s: %v", name, err)
		}
		latest = max(latest, uint(v))
	}
	return latest
}

// Three service starts at the same instant (service.New with Migrate) on
// an empty database: every one becomes ready, the schema is migrated by
// exactly one of them, to the latest version, not dirty. Directly, in the
// deployment shape (pool through the bouncer, migrations on the direct
// URL), and with the migrations through the bouncer as well (on main
// before issue 11, golang-migrate's session lock let all three migrate:
// dirty versions, duplicate types, hung starts).
func TestPgBouncerThreeSimultaneousStarts(t *testing.T) {
	latest := latestMigration(t)
	for _, shape := range []string{"direct", "pooled", "migrating through PgBouncer"} {
		t.Run(shape, func(t *testing.T) {
			f := newFleet(t)
			admin := connect(t, f.dbURL)
			if _, err := admin.Exec(context.Background(), `DROP SCHEMA public CASCADE; CREATE SCHEMA public`); err != nil {
				t.Fatal(err)
			}
			var mod func(*config.Config)
			switch shape {
			case "pooled":
				mod = f.pooled(testdb.StartPgBouncer(t))
			case "migrating through PgBouncer":
				bounced := testdb.StartPgBouncer(t).URL(f.dbURL)
				mod = func(c *config.Config) {
					c.DatabaseURL = crypto.Secret(bounced + "&pool_max_conns=16")
					c.DatabaseDirectURL = crypto.Secret(bounced)
				}
			}
			var (
				wg    sync.WaitGroup
				gate  = make(chan struct{})
				svcs  [3]*service.Service
				errs  [3]error
				begun = time.Now()
			)
			for i := range 3 {
				wg.Go(func() {
					<-gate
					svcs[i], errs[i] = newService(f, mod, service.Deps{Migrate: true})
				})
			}
			close(gate)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("start %d: %v", i, err)
				}
			}
			if t.Failed() {
				for _, s := range svcs {
					if s != nil {
						s.Close()
					}
				}
				t.FailNow()
			}
			for _, s := range svcs {
				run(t, s)
			}
			t.Logf("%s: three starts ready after %v", shape, time.Since(begun))
			if n := strings.Count(f.logs.String(), `"msg":"migrations applied"`); n != 1 {
				t.Errorf("%d of 3 starts applied migrations, want exactly 1", n)
			}
			v, dirty, err := store.MigrationVersion(f.dbURL)
			if err != nil || dirty || v != latest {
				t.Errorf("after three starts: version %d, dirty %v (%v); want %d, clean", v, dirty, err, latest)
			}
			var rows int
			if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM schema_migrations`).Scan(&rows); err != nil || rows != 1 {
				t.Errorf("schema_migrations has %d rows (%v), want 1", rows, err)
			}
		})
	}
}

// DATABASE_URL through the pooler without DATABASE_DIRECT_URL: the service
// takes DATABASE_URL for direct, sends statement_timeout and PgBouncer
// refuses it. The start fails (LISTEN through the pooler would be deaf, as
// the control above shows), with a message that says what to set, and
// without the URL's password.
func TestPgBouncerWithoutDirectURLSaysWhatToSet(t *testing.T) {
	f := newFleet(t)
	b := testdb.StartPgBouncer(t)
	u, err := url.Parse(b.URL(f.dbURL))
	if err != nil {
		t.Fatal(err)
	}
	const password = "pw-that-must-not-leak"
	u.User = url.UserPassword(u.User.Username(), password)
	svc, err := newService(f, func(c *config.Config) { c.DatabaseURL = crypto.Secret(u.String()) }, service.Deps{Migrate: true})
	if err == nil {
		svc.Close()
		t.Fatal("the service started with only DATABASE_URL through a transaction pooler")
	}
	msg := err.Error()
	for _, want := range []string{"unsupported startup parameter: statement_timeout", "set DATABASE_DIRECT_URL", "statement_timeout on the broker's role"} {
		if !strings.Contains(msg, want) {
			t.Errorf("start error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, password) || strings.Contains(f.logs.String(), password) {
		t.Error("the database password reached the error or the logs")
	}
}

// Through the pooler the service sends no statement_timeout; the one set
// on the server side (docs/DEPLOY.md: ALTER ROLE broker SET
// statement_timeout) reaches every pooled transaction. The test bouncer
// logs in as one server user for every client, so the database's setting
// stands in for the role's: both apply when a server session starts.
// Directly, the service's own StatementTimeout applies.
func TestPgBouncerStatementTimeoutFromTheServer(t *testing.T) {
	f := newFleet(t)
	admin := connect(t, f.dbURL)
	if _, err := admin.Exec(context.Background(), `ALTER DATABASE `+pgx.Identifier{admin.Config().Database}.Sanitize()+` SET statement_timeout = '7s'`); err != nil {
		t.Fatal(err)
	}
	b := testdb.StartPgBouncer(t)
	pooled, direct := f.start(f.pooled(b)), f.start(nil)
	show := func(in *instance) string {
		t.Helper()
		var v string
		if err := in.Pool.QueryRow(context.Background(), `SHOW statement_timeout`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := show(pooled); got != "7s" {
		t.Errorf("through PgBouncer statement_timeout = %s, want the server's 7s", got)
	}
	if got, want := show(direct), fmt.Sprintf("%ds", int(service.StatementTimeout.Seconds())); got != want {
		t.Errorf("direct statement_timeout = %s, want the service's %s", got, want)
	}
}

// A direct DATABASE_URL (DATABASE_DIRECT_URL unset) gets a pool that
// keeps prepared statements, so Postgres plans each statement once per
// connection; through the pooler the pool prepares nothing (a transaction
// pooler would mix the names up across server connections, which the
// other tests here would show as failures); and a URL's own
// default_query_exec_mode wins. Each instance serves a callback to prove
// its pool works.
func TestPreparedStatementsOnlyOnADirectPool(t *testing.T) {
	f := newFleet(t)
	b := testdb.StartPgBouncer(t)
	pooled, direct := f.start(f.pooled(b)), f.start(nil)
	own := f.start(func(c *config.Config) { c.DatabaseURL = crypto.Secret(f.dbURL + "&default_query_exec_mode=exec") })
	prepared := func(in *instance) int {
		t.Helper()
		f.install(in, uuid.NewString())
		var n int
		if err := in.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_prepared_statements WHERE $1`, true).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := prepared(direct); n == 0 {
		t.Errorf("the direct pool's connection holds no prepared statement (mode %v)", direct.Pool.Config().ConnConfig.DefaultQueryExecMode)
	}
	if n := prepared(pooled); n != 0 {
		t.Errorf("the pool through PgBouncer prepared %d statements", n)
	}
	if n := prepared(own); n != 0 {
		t.Errorf("a direct URL with default_query_exec_mode=exec prepared %d statements", n)
	}
}

// DATABASE_DIRECT_URL may carry the pool settings DATABASE_URL has (an
// operator copying one URL to the other): the migrations understood them,
// but LISTEN sent pool_max_conns to Postgres as a session parameter,
// Postgres refused every connect ("unrecognized configuration parameter"),
// and the instance never became ready. It now starts, migrates and hears
// another instance's changes.
func TestPgBouncerDirectURLWithPoolSettings(t *testing.T) {
	f := newFleet(t)
	b := testdb.StartPgBouncer(t)
	withPoolSettings := func(c *config.Config) {
		f.pooled(b)(c)
		c.DatabaseDirectURL = crypto.Secret(f.dbURL + "&pool_max_conns=8&pool_min_conns=0")
	}
	a := f.start(f.pooled(b))
	in := runInstance(t, f, withPoolSettings, service.Deps{Migrate: true})
	if !in.Store.ListenerConfirmed() {
		t.Fatal("the listener is not confirmed")
	}
	ctx := context.Background()
	account := uuid.NewString()
	req := token.Request{IrisAppID: testApp, AccountID: account}
	f.install(a, account)
	if _, err := in.Installs.Token(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Store.ApplyInstallEvent(ctx, store.InstallEvent{Type: store.TypeUninstalled, IrisAppID: testApp, AccountID: account}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the instance to refuse the install uninstalled through the other", func() bool {
		_, err := in.Installs.Token(ctx, req)
		return errors.Is(err, token.ErrUninstalled)
	})
}

// The shared-token writes behind "one mint fleet-wide" through the bouncer:
// three instances, 300 cold callers each for an install and an API key,
// one upstream call per kind.
func TestPgBouncerFleetMintsOnce(t *testing.T) {
	f := newFleet(t)
	b := testdb.StartPgBouncer(t)
	ins := []*instance{f.start(f.pooled(b)), f.start(f.pooled(b)), f.start(f.pooled(b))}
	ctx := context.Background()
	const n = 300
	account := uuid.NewString()
	f.install(ins[0], account)
	one(t, "install through PgBouncer", stampede(n, ins, func(in *instance) (string, error) {
		tok, err := in.Installs.Token(ctx, token.Request{IrisAppID: testApp, AccountID: account})
		return tok.AccessToken.Reveal(), err
	}), n)
	keyID, keySecret := trackunitsim.NewClientCredentials()
	f.sim.AddAPIKey(keyID, keySecret, []string{"asset.view"})
	if _, err := ins[0].Store.CreateAPIKey(ctx, store.NewAPIKey{Name: "reports", ClientID: crypto.Secret(keyID),
		ClientSecret: keySecret, Scopes: []string{"asset.view"}}); err != nil {
		t.Fatal(err)
	}
	one(t, "API key through PgBouncer", stampede(n, ins, func(in *instance) (string, error) {
		tok, err := in.APIKeys.Token(ctx, "reports", nil, 0)
		return tok.AccessToken.Reveal(), err
	}), n)
	for _, ep := range []string{trackunitsim.EndpointAppToken, trackunitsim.EndpointTokenV2} {
		if got := f.sim.Calls(ep); got != 1 {
			t.Errorf("%d %s calls for %d callers on 3 instances through PgBouncer, want 1", got, ep, n)
		}
	}
}
