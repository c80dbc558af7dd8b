package drills

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

var (
	binDir string // removed by TestMain

	buildOnce sync.Once
	binary    string
	buildErr  error
)

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "irisx-drills-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// brokerBinary builds cmd/irisx-broker once per test process.
func brokerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		binary, buildErr = harness.BuildBroker(ctx, binDir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

func newSim(t *testing.T, opts trackunitsim.Options) *harness.SimServer {
	t.Helper()
	sim, err := harness.StartSim(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	return sim
}

func newKeys(t *testing.T) string {
	t.Helper()
	keys, err := harness.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// startChild runs `irisx-broker serve` on dbURL against the simulator and
// waits until it is ready. It is stopped when the test ends; its log is
// printed if the test failed.
func startChild(t *testing.T, ctx context.Context, dbURL, keys string, sim *harness.SimServer, extra map[string]string) *harness.Child {
	t.Helper()
	env := harness.BrokerEnv(dbURL, keys, sim.JWKSURL(), sim.URL)
	for k, v := range extra {
		env[k] = v
	}
	c, err := harness.StartChild(ctx, harness.ChildConfig{
		Binary: brokerBinary(t), Env: env,
		LogPath: filepath.Join(t.TempDir(), fmt.Sprintf("broker-%d.log", time.Now().UnixNano())),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(20 * time.Second); err != nil && !killed(err) {
			t.Errorf("broker exit: %v", err)
		}
		if t.Failed() {
			t.Logf("broker log (tail):\n%s", c.LogTail(30))
		}
	})
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// killed reports whether a child's exit error is the SIGKILL a drill sent.
func killed(err error) bool {
	return err != nil && err.Error() == "signal: killed"
}

// startService runs the in-process broker, for drills that need its clock.
func startService(t *testing.T, ctx context.Context, cfg harness.ServiceConfig) *harness.Service {
	t.Helper()
	svc, err := harness.StartService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	if err := svc.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return svc
}

// proxyTarget is the host:port of a database URL, for testdb.NewProxy.
func proxyTarget(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// openStore opens the drill's own view of the database, bypassing any
// proxy, with the broker's keyring so stored secrets can be opened.
func openStore(t *testing.T, ctx context.Context, dbURL, keys string) (*store.Store, *pgx.Conn) {
	t.Helper()
	ring := testkit.Keyring(t, keys)
	pool, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return store.New(pool, ring), conn
}

// storedInstalls counts installs rows and event rows per account of an app.
func storedInstalls(t *testing.T, ctx context.Context, conn *pgx.Conn, app string) (rows, events map[string]int) {
	t.Helper()
	rows, events = map[string]int{}, map[string]int{}
	for table, m := range map[string]map[string]int{"installs": rows, "install_events": events} {
		r, err := conn.Query(ctx, "SELECT account_id::text, count(*) FROM "+table+" WHERE iris_app_id = $1 GROUP BY account_id", app)
		if err != nil {
			t.Fatal(err)
		}
		var (
			account string
			n       int
		)
		if _, err := pgx.ForEachRow(r, []any{&account, &n}, func() error { m[account] = n; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	return rows, events
}

// doubleLogged counts the accounts of an app with two events from one
// delivery. Each delivery's events carry the time the broker received it,
// so two events with one received_at are a single callback logged twice,
// e.g. by a store retry after a lost commit reply.
func doubleLogged(t *testing.T, ctx context.Context, conn *pgx.Conn, app string) int {
	t.Helper()
	var n int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM (
			SELECT account_id FROM install_events WHERE iris_app_id = $1
			GROUP BY account_id HAVING count(*) > count(DISTINCT received_at)) d`, app).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkCredentials opens every stored install of the callbacks' accounts
// and compares it with what was sent: nothing undecryptable, nothing but
// the credentials of the account's own callback.
func checkCredentials(t *testing.T, ctx context.Context, st *store.Store, sent map[string]harness.Callback, stored map[string]int) {
	t.Helper()
	for account := range stored {
		cb, ok := sent[account]
		if !ok {
			t.Errorf("install %s is stored but was never sent", account)
			continue
		}
		c, err := st.InstallCredentials(ctx, cb.IrisAppID, account)
		switch {
		case errors.Is(err, store.ErrUndecryptable):
			t.Errorf("install %s does not decrypt: %v", account, err)
		case err != nil:
			t.Errorf("install %s: %v", account, err)
		case c.Status != store.StatusInstalled || c.ClientID.Reveal() != cb.ClientID || c.ClientSecret.Reveal() != cb.ClientSecret.Reveal():
			t.Errorf("install %s: status %s and credentials differ from the callback's", account, c.Status)
		}
	}
}
