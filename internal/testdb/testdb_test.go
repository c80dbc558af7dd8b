package testdb

import (
	"errors"
	"io"
	"io/fs"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/migrations"
)

func dbName(t *testing.T, dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func TestNewDatabaseIsMigratedIsolatedAndDropped(t *testing.T) {
	ups, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil || len(ups) == 0 {
		t.Fatalf("no embedded migrations: %v", err)
	}
	// The newest number: numbers reserved for parallel work may leave gaps.
	latest := 0
	for _, name := range ups {
		n, err := strconv.Atoi(name[:strings.IndexByte(name, '_')])
		if err != nil {
			t.Fatalf("migration %s: %v", name, err)
		}
		latest = max(latest, n)
	}
	var first string
	t.Run("use", func(t *testing.T) {
		first = NewDatabase(t)
		second := NewDatabase(t)
		if first == second {
			t.Fatalf("two databases share the URL %s", first)
		}
		pool := NewPool(t)
		for _, u := range []string{first, second} {
			conn, err := pgx.Connect(testkit.Context(t), u)
			if err != nil {
				t.Fatal(err)
			}
			var version int
			var dirty bool
			if err := conn.QueryRow(testkit.Context(t), "SELECT version, dirty FROM schema_migrations").Scan(&version, &dirty); err != nil || version != latest || dirty {
				t.Errorf("%s: schema version %d (dirty %v), %v; want %d", u, version, dirty, err, latest)
			}
			conn.Close(testkit.Context(t))
		}
		// A row in one database is not in another.
		if _, err := pool.Exec(testkit.Context(t), `INSERT INTO install_events (iris_app_id, account_id, type, outcome, event_at, received_at)
			VALUES ('a', gen_random_uuid(), 'X', 'ignored', now(), now())`); err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(testkit.Context(t), first)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(testkit.Context(t))
		var n int
		if err := conn.QueryRow(testkit.Context(t), "SELECT count(*) FROM install_events").Scan(&n); err != nil || n != 0 {
			t.Errorf("another test's row is visible: %d, %v", n, err)
		}
	})
	base, err := server(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(testkit.Context(t), base)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(testkit.Context(t))
	var exists bool
	if err := conn.QueryRow(testkit.Context(t), "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", dbName(t, first)).Scan(&exists); err != nil || exists {
		t.Errorf("database %s still exists after its test (%v)", dbName(t, first), err)
	}
	// The template is named by the migrations and refuses connections.
	sum, err := migrationsHash()
	if err != nil {
		t.Fatal(err)
	}
	var allow, isTemplate bool
	err = conn.QueryRow(testkit.Context(t), "SELECT datallowconn, datistemplate FROM pg_database WHERE datname = $1", "tmpl_"+sum).Scan(&allow, &isTemplate)
	if err != nil || allow || !isTemplate {
		t.Errorf("template tmpl_%s: allow connections %v, is template %v, %v", sum, allow, isTemplate, err)
	}
}

func TestProxy(t *testing.T) {
	// An echo server stands in for Postgres.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	p := NewProxy(t, ln.Addr().String())

	if got, want := p.URL("postgres://u:pw@db.example:5432/x?sslmode=disable"), "postgres://u:pw@"+p.Addr()+"/x?sslmode=disable"; got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}
	echo := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "ping" {
			return errors.New("echo mismatch: " + string(buf))
		}
		return nil
	}
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	open := dial()
	if err := echo(open); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	p.Block()
	if err := echo(open); err == nil {
		t.Errorf("an open connection still works after Block")
	}
	// While blocked the connection is reset, which may already fail the
	// dial on a busy machine, or else the first exchange.
	if c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second); err == nil {
		if err := echo(c); err == nil {
			t.Errorf("a new connection works while blocked")
		}
		c.Close()
	}
	p.Unblock()
	if err := echo(dial()); err != nil {
		t.Errorf("a new connection after Unblock: %v", err)
	}
}
