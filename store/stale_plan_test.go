package store_test

import (
	"strings"
	"testing"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// With prepared statements (the service asks for them when DATABASE_URL is
// Postgres itself), a migration adding a column to a table that a
// statement returns with * makes Postgres refuse that prepared statement
// once on each connection. Store.retry runs the operation again, pgx
// prepares it anew, and the caller never sees the refusal.
func TestRetryPreparesAStaleStatementAgain(t *testing.T) {
	t.Parallel()
	ctx := testkit.Context(t)
	dbURL := testdb.NewDatabase(t)
	// One connection, so every call meets its prepared statement.
	pool, err := store.Open(ctx, dbURL+"&default_query_exec_mode=cache_statement&pool_max_conns=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st := store.New(pool, testkit.Keyring(t, testkit.KeySpec))
	admin, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	exec := func(sql string) {
		t.Helper()
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	exec(`CREATE TABLE stale_plan (a int); INSERT INTO stale_plan VALUES (1)`)
	read := func() error {
		rows, err := pool.Query(ctx, `SELECT * FROM stale_plan WHERE a = $1`, 1)
		if err != nil {
			return err
		}
		rows.Close()
		return rows.Err()
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}
	exec(`ALTER TABLE stale_plan ADD COLUMN b int`)
	// The control: without retry the caller gets the refusal.
	if err := read(); err == nil || !strings.Contains(err.Error(), "cached plan must not change result type") {
		t.Fatalf("read after the migration = %v, want Postgres refusing the stale plan", err)
	}
	if err := read(); err != nil {
		t.Fatalf("read once pgx forgot the statement: %v", err)
	}
	exec(`ALTER TABLE stale_plan ADD COLUMN c int`)
	attempts := 0
	if err := st.Retry(ctx, func() error { attempts++; return read() }); err != nil {
		t.Fatalf("read through retry after the second migration: %v", err)
	}
	if attempts != 2 {
		t.Errorf("%d attempts, want 2 (the refused one and the one prepared anew)", attempts)
	}
}
