package store_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-migrate/migrate/v4/database"
	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// emptyDatabase is a fresh database with no schema at all: testdb's
// migrated copy, migrated down and stripped of the version table.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	url := testdb.NewDatabase(t)
	_, count := latestMigration(t)
	if err := store.MigrateDown(url, count); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(testkit.Context(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// River's tables are not ours to migrate down: drop what is left.
	if _, err := conn.Exec(testkit.Context(t), "DROP SCHEMA public CASCADE; CREATE SCHEMA public"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(testkit.Context(t), "SELECT count(*) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = 'public'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the database is not empty: %d relations, %v", n, err)
	}
	return url
}

// threeStarts runs three Migrate calls at the same instant on migrateURL
// and checks, on checkURL, that the schema was migrated once, not dirty.
func threeStarts(t *testing.T, migrateURL, checkURL string) {
	t.Helper()
	latest, _ := latestMigration(t)
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results [3]store.MigrateResult
		errs    [3]error
	)
	for i := range 3 {
		wg.Go(func() {
			<-start
			results[i], errs[i] = store.Migrate(testkit.Context(t), migrateURL, nil)
		})
	}
	close(start)
	wg.Wait()
	migrated := 0
	for i := range 3 {
		if errs[i] != nil {
			t.Errorf("start %d: %v", i, errs[i])
			continue
		}
		r := results[i]
		if r.To != latest || r.Latest != latest || r.Newer() {
			t.Errorf("start %d: %+v, want To = Latest = %d", i, r, latest)
		}
		if r.Applied() > 0 {
			migrated++
			if r.From != 0 {
				t.Errorf("start %d migrated from %d, want from 0", i, r.From)
			}
		}
	}
	if migrated != 1 {
		t.Errorf("%d of 3 starts applied migrations, want exactly 1: %+v", migrated, results)
	}
	v, dirty, err := store.MigrationVersion(checkURL)
	if err != nil || dirty || v != latest {
		t.Errorf("after three starts: version %d dirty %v (%v), want %d and clean", v, dirty, err, latest)
	}
	conn, err := pgx.Connect(testkit.Context(t), checkURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var tables int
	if err := conn.QueryRow(testkit.Context(t), `SELECT count(*) FROM information_schema.tables
		WHERE table_schema = 'public' AND table_name IN ('installs', 'install_events', 'api_users')`).Scan(&tables); err != nil || tables != 3 {
		t.Errorf("%d of the 3 tables exist (%v)", tables, err)
	}
}

func TestThreeSimultaneousMigrations(t *testing.T) {
	t.Parallel()
	url := emptyDatabase(t)
	threeStarts(t, url, url)
}

// A binary on a schema one version ahead of it (a rollback, or the older
// replicas of a rolling deploy) serves: a result to warn about, no error.
func TestMigrateOnNewerSchemaServes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	latest, _ := latestMigration(t)
	if _, err := e.pool.Exec(testkit.Context(t), "UPDATE schema_migrations SET version = $1", int64(latest+1)); err != nil {
		t.Fatal(err)
	}
	res, err := store.Migrate(testkit.Context(t), e.url, nil)
	if err != nil {
		t.Fatalf("Migrate on a newer schema: %v (want a warning, not an error)", err)
	}
	if !res.Newer() || res.From != latest+1 || res.To != latest+1 || res.Latest != latest || res.Applied() != 0 {
		t.Errorf("result %+v, want Newer from %d with nothing applied", res, latest+1)
	}
	if err := store.MigrateUp(e.url); err != nil {
		t.Errorf("MigrateUp on a newer schema: %v", err)
	}
	if v, dirty, err := store.MigrationVersion(e.url); err != nil || dirty || v != latest+1 {
		t.Errorf("version %d dirty %v (%v): the newer schema's version was changed", v, dirty, err)
	}
}

// syncBuffer is an io.Writer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A start blocked on the migration lock (held here as an older binary's
// golang-migrate would hold it, a session lock on the same key) says so
// after a second, and ends within 5 s of its context ending (SIGTERM),
// leaving no waiter behind on the server.
func TestMigrateLockWaitEndsOnCancel(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"direct", "pgbouncer"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			direct := testdb.NewDatabase(t)
			url, bouncerLog := direct, func() string { return "" }
			if via == "pgbouncer" {
				b := testdb.StartPgBouncer(t)
				url, bouncerLog = b.URL(direct), b.Log
			}
			holder, err := pgx.Connect(testkit.Context(t), direct)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close(context.Background())
			var db, schema string
			if err := holder.QueryRow(testkit.Context(t), "SELECT current_database(), current_schema()").Scan(&db, &schema); err != nil {
				t.Fatal(err)
			}
			id, _ := database.GenerateAdvisoryLockId(db, schema, "schema_migrations")
			key, _ := strconv.ParseInt(id, 10, 64)
			if _, err := holder.Exec(testkit.Context(t), "SELECT pg_advisory_lock($1)", key); err != nil {
				t.Fatal(err)
			}

			var logs syncBuffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			mctx, cancel := context.WithCancel(testkit.Context(t))
			defer cancel()
			done := make(chan error, 1)
			go func() { _, err := store.Migrate(mctx, url, logger); done <- err }()

			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(logs.String(), "waiting for the migration lock") {
				if time.Now().After(deadline) {
					t.Fatalf("no \"waiting for the migration lock\" log line; logs:\n%s", logs.String())
				}
				select {
				case err := <-done:
					t.Fatalf("Migrate returned while the lock is held: %v", err)
				case <-time.After(50 * time.Millisecond):
				}
			}
			cancel()
			start := time.Now()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Migrate after cancel = %v, want context.Canceled", err)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("Migrate took %v to end after cancel, want under 5 s", d)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Migrate did not end within 5 s of cancel")
			}
			// The cancelled wait left the lock queue on the server.
			var waiting int
			for range 50 {
				if via != "direct" {
					break // a bouncer keeps its server connections
				}
				if err := holder.QueryRow(testkit.Context(t), `SELECT count(*) FROM pg_stat_activity
					WHERE application_name = $1 AND datname = $2`, store.MigrateApplicationName, db).Scan(&waiting); err != nil {
					t.Fatal(err)
				}
				if waiting == 0 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if waiting != 0 {
				t.Errorf("%d migration sessions still on the server after cancel", waiting)
			}
			// Once the holder lets go, a new start migrates (nothing pending).
			if _, err := holder.Exec(testkit.Context(t), "SELECT pg_advisory_unlock($1)", key); err != nil {
				t.Fatal(err)
			}
			if _, err := store.Migrate(testkit.Context(t), url, nil); err != nil {
				t.Errorf("Migrate after the lock is released: %v\n%s", err, bouncerLog())
			}
		})
	}
}
