package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

const (
	app     = "@acme/fleet-app"
	account = "6f1c0e9a-1b2c-4d3e-8f40-000000000001"
	other   = "6f1c0e9a-1b2c-4d3e-8f40-000000000002"
)

// t0 is the fake "now" every test starts from.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// env is one test's database, pool, keyring and store.
type env struct {
	url   string
	pool  *pgxpool.Pool
	keys  *crypto.Keyring
	clock *testkit.Clock
	store *store.Store
}

func newEnv(t testing.TB) *env {
	t.Helper()
	url := testdb.NewDatabase(t)
	pool, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := &env{url: url, pool: pool, keys: testkit.Keyring(t, "k1:"+testkit.Key(1)+",k0:"+testkit.Key(0)), clock: testkit.NewClock(t0)}
	e.store = store.New(pool, e.keys, store.WithClock(e.clock.Now))
	return e
}

func installed(acct, clientID, secret string, at time.Time) store.InstallEvent {
	return store.InstallEvent{
		Type: store.TypeInstalled, IrisAppID: app, AccountID: acct,
		ClientID: crypto.Secret(clientID), ClientSecret: crypto.Secret(secret),
		EventAt: at, ReceivedAt: at.Add(time.Second), JTI: "jti-" + clientID, RemoteAddr: "203.0.113.7",
	}
}

func uninstalled(acct string, at time.Time) store.InstallEvent {
	return store.InstallEvent{
		Type: store.TypeUninstalled, IrisAppID: app, AccountID: acct,
		EventAt: at, ReceivedAt: at.Add(time.Second), JTI: "jti-uninstall", RemoteAddr: "203.0.113.7",
	}
}

func (e *env) apply(t testing.TB, ev store.InstallEvent, want store.Outcome) {
	t.Helper()
	got, err := e.store.ApplyInstallEvent(testkit.Context(t), ev)
	if err != nil {
		t.Fatalf("ApplyInstallEvent(%s at %s): %v", ev.Type, ev.EventAt, err)
	}
	if got != want {
		t.Fatalf("ApplyInstallEvent(%s at %s) = %q, want %q", ev.Type, ev.EventAt, got, want)
	}
}

func (e *env) creds(t testing.TB, acct string) store.Credentials {
	t.Helper()
	c, err := e.store.InstallCredentials(testkit.Context(t), app, acct)
	if err != nil {
		t.Fatalf("InstallCredentials: %v", err)
	}
	return c
}

// rawRow is what is stored for an install, read behind the store's back.
type rawRow struct {
	Status          string
	KeyID           *string
	ClientIDEnc     []byte
	ClientSecretEnc []byte
	Version         int64
	LastEventAt     time.Time
}

func (e *env) raw(t testing.TB, acct string) rawRow {
	t.Helper()
	var r rawRow
	err := e.pool.QueryRow(testkit.Context(t), `SELECT status, key_id, client_id_enc, client_secret_enc, credentials_version, last_event_at
		FROM installs WHERE iris_app_id = $1 AND account_id = $2`, app, acct).
		Scan(&r.Status, &r.KeyID, &r.ClientIDEnc, &r.ClientSecretEnc, &r.Version, &r.LastEventAt)
	if err != nil {
		t.Fatalf("read installs row: %v", err)
	}
	return r
}

func (e *env) count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(testkit.Context(t), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
