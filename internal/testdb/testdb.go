// Package testdb is the test harness for real Postgres: it hands every test
// a fresh, migrated, isolated database cloned from a template, and a TCP
// proxy that can cut the connection to Postgres for failure tests.
//
// The server is TEST_DATABASE_URL when set, else a Postgres container
// started once per test process with testcontainers-go. Neither available
// is a test failure, never a skip.
//
// testdb migrates with store.MigrateUp, so store's own tests that use it
// are in package store_test.
package testdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/migrations"
	"github.com/irisx-broker/irisx-broker/store"
)

// EnvURL names the variable holding the URL of a Postgres server whose
// user may create databases.
const EnvURL = "TEST_DATABASE_URL"

// setupTimeout bounds everything NewDatabase does, so a stuck server fails
// the test instead of hanging it.
const setupTimeout = 2 * time.Minute

var (
	serverOnce sync.Once
	serverURL  string
	serverErr  error

	templateMu   sync.Mutex
	templateName string // set once the template exists
)

// NewDatabase returns the URL of a fresh database migrated to the latest
// schema, for this test alone. It is dropped when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()

	base, err := server(ctx)
	if err != nil {
		t.Fatalf("testdb: no Postgres for tests: %v", err)
	}
	tmpl, err := ensureTemplate(ctx, base)
	if err != nil {
		t.Fatalf("testdb: prepare template database: %v", err)
	}
	name := "t_" + randomHex(8)
	if err := execAdmin(ctx, base, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(tmpl)); err != nil {
		t.Fatalf("testdb: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := DropDatabase(ctx, base, name); err != nil {
			t.Error(err)
		}
	})
	return withDatabase(base, name)
}

// NewPool returns a pool on a fresh database (see NewDatabase), closed when
// the test ends.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	dbURL := NewDatabase(t)
	pool, err := store.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("testdb: open pool: %v", err)
	}
	t.Cleanup(pool.Close) // runs before the database is dropped
	return pool
}

// server returns the base URL, starting a container on first use when
// TEST_DATABASE_URL is unset.
func server(ctx context.Context) (string, error) {
	serverOnce.Do(func() {
		if u := os.Getenv(EnvURL); u != "" {
			if _, err := WithDatabase(u, "postgres"); err != nil {
				serverErr = fmt.Errorf("%s must be a postgres:// URL", EnvURL)
				return
			}
			serverURL = u
			return
		}
		serverURL, serverErr = startContainer(ctx)
		if serverErr != nil {
			serverErr = fmt.Errorf("%s is unset and starting a Postgres container failed "+
				"(is Docker running?): %w", EnvURL, serverErr)
		}
	})
	return serverURL, serverErr
}

// ensureTemplate creates, once per schema, a template database holding the
// migrated schema. Its name is derived from the embedded migrations, so
// changed migrations get a new template. Test processes (one per package)
// run concurrently, so creation is serialised with an advisory lock and a
// template is built under a temporary name and renamed when complete: a
// crashed build never leaves a half-migrated template behind.
func ensureTemplate(ctx context.Context, base string) (string, error) {
	templateMu.Lock()
	defer templateMu.Unlock()
	if templateName != "" {
		return templateName, nil
	}
	sum, err := migrationsHash()
	if err != nil {
		return "", err
	}
	name := "tmpl_" + sum
	building := name + "_building"

	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", fmt.Errorf("connect to the test server (%s or the test container): %w", EnvURL, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// The lock id is fixed: one template build at a time per server.
	const lockID = 0x69726973_74657374 // "iristest"
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(lockID)); err != nil {
		return "", fmt.Errorf("advisory lock: %w", err)
	}
	// Closing the session would release the lock too; unlocking first lets
	// the next process in before our connection is torn down.
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(lockID)) }()

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", fmt.Errorf("look up template: %w", err)
	}
	if !exists {
		for _, sql := range []string{
			"DROP DATABASE IF EXISTS " + ident(building) + " WITH (FORCE)",
			"CREATE DATABASE " + ident(building),
		} {
			if _, err := conn.Exec(ctx, sql); err != nil {
				return "", fmt.Errorf("%s: %w", sql, err)
			}
		}
		if err := store.MigrateUp(withDatabase(base, building)); err != nil {
			return "", err
		}
		// Nobody may connect to the template: a connection would make
		// CREATE DATABASE ... TEMPLATE fail.
		for _, sql := range []string{
			"ALTER DATABASE " + ident(building) + " RENAME TO " + ident(name),
			"ALTER DATABASE " + ident(name) + " WITH ALLOW_CONNECTIONS false IS_TEMPLATE true",
		} {
			if err := retryInUse(ctx, func() error { _, err := conn.Exec(ctx, sql); return err }); err != nil {
				return "", fmt.Errorf("%s: %w", sql, err)
			}
		}
	}
	templateName = name
	return name, nil
}

// migrationsHash names the schema: a hash of every embedded migration file.
func migrationsHash() (string, error) {
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return "", err
	}
	slices.Sort(names)
	h := sha256.New()
	for _, n := range names {
		b, err := fs.ReadFile(migrations.FS, n)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// execAdmin runs one statement on the base database, retrying briefly while
// the template is in use (SQLSTATE 55006): a session that just left it may
// still be shutting down.
func execAdmin(ctx context.Context, base, sql string) error {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return retryInUse(ctx, func() error { _, err := conn.Exec(ctx, sql); return err })
}

func retryInUse(ctx context.Context, fn func() error) error {
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		err := fn()
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
	}
}

// withDatabase is WithDatabase for a base URL server has validated.
func withDatabase(base, name string) string {
	u, _ := WithDatabase(base, name)
	return u
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
