package testdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PgBouncerPoolSize is the server connections the test PgBouncer keeps per
// database and user: fewer than a store pool's connections, so clients
// really share server connections from one transaction to the next.
const PgBouncerPoolSize = 4

// PgBouncer is Debian's real pgbouncer, in transaction mode, in front of
// the test server, for one test.
type PgBouncer struct {
	// Addr is its loopback host:port.
	Addr string
	dir  string
}

// StartPgBouncer starts pgbouncer in pool_mode=transaction on a free
// loopback port, pooling every database of the test server, and stops it
// when the test ends. A missing pgbouncer binary fails the test under
// CI=true (the project's scripts install it) and skips it elsewhere.
func StartPgBouncer(t testing.TB) *PgBouncer {
	t.Helper()
	bin := pgbouncerPath()
	if bin == "" {
		missingPgBouncer(t)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	base, err := server(ctx)
	if err != nil {
		t.Fatalf("testdb: no Postgres for tests: %v", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("testdb: %s: %v", EnvURL, err)
	}

	dir, err := os.MkdirTemp("", "irisx-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	b := &PgBouncer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir}

	username := u.User.Username()
	if username == "" {
		username = "postgres"
	}
	backend := "host=" + u.Hostname() + " port=" + portOr(u.Port(), "5432") + " user=" + username
	if pw, ok := u.User.Password(); ok {
		backend += " password=" + pw
	}
	// The ini is what a managed PgBouncer typically runs, at its
	// strictest for a client (docs/DEPLOY.md, "The test bouncer"):
	//   - pool_mode = transaction, and a default_pool_size (4) below a
	//     store pool's 16 connections, so server connections really pass
	//     from one client to another between transactions;
	//   - server_reset_query left at its default: in transaction mode it
	//     is not run (server_reset_query_always = 0), so session state a
	//     client leaves behind (SET, session advisory locks, LISTEN,
	//     prepared statements) reaches the next client, as in production;
	//   - ignore_startup_parameters = extra_float_digits only, the usual
	//     managed value (for JDBC clients): any other startup parameter,
	//     statement_timeout included, is refused as it would be there;
	//   - max_prepared_statements = 0 on PgBouncer >= 1.21 (1.22 turned it
	//     on by default): the broker must not depend on the pooler
	//     tracking protocol-level prepared statements;
	//   - auth_type = trust, since the test server trusts loopback; managed
	//     poolers use scram-sha-256, which changes nothing here.
	ini := strings.Join([]string{
		"[databases]",
		"* = " + backend,
		"[pgbouncer]",
		"listen_addr = 127.0.0.1",
		"listen_port = " + strconv.Itoa(port),
		"unix_socket_dir =",
		"auth_type = trust",
		"auth_file = " + filepath.Join(dir, "userlist.txt"),
		"pool_mode = transaction",
		"max_client_conn = 500",
		"default_pool_size = " + strconv.Itoa(PgBouncerPoolSize),
		"reserve_pool_size = 0",
		"max_db_connections = 0",
		"ignore_startup_parameters = extra_float_digits",
		"logfile = " + filepath.Join(dir, "pgbouncer.log"),
		"pidfile = " + filepath.Join(dir, "pgbouncer.pid"),
		"admin_users = " + username,
		"",
	}, "\n")
	if pgbouncerAtLeast(bin, 1, 21) {
		ini += "max_prepared_statements = 0\n"
	}
	files := map[string]string{
		"pgbouncer.ini": ini,
		"userlist.txt":  fmt.Sprintf("%q \"\"\n", username),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	args := []string{filepath.Join(dir, "pgbouncer.ini")}
	// pgbouncer refuses to run as root; it drops to the postgres user,
	// which must be able to write its log and pid files.
	if os.Getuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testdb: pgbouncer cannot run as root and there is no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		for _, p := range []string{dir, filepath.Join(dir, "pgbouncer.ini"), filepath.Join(dir, "userlist.txt")} {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		args = append([]string{"-u", "postgres"}, args...)
	}
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testdb: start pgbouncer: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT) // shut down at once
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	for {
		c, err := net.DialTimeout("tcp", b.Addr, time.Second)
		if err == nil {
			c.Close()
			return b
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("testdb: pgbouncer exited: %v\n%s%s", err, out.String(), log)
		case <-ctx.Done():
			t.Fatalf("testdb: pgbouncer did not listen on %s", b.Addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// missingPgBouncer fails t under CI=true, where the project's scripts have
// installed pgbouncer and its absence is a broken CI, and skips t
// elsewhere.
func missingPgBouncer(t testing.TB) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal("testdb: pgbouncer is not installed (scripts/ensure-postgres.sh test --pgbouncer installs Debian's)")
	}
	t.Skip("testdb: pgbouncer is not installed; apt-get install pgbouncer (or make test) to run this test")
}

// URL returns dbURL (a URL from NewDatabase) routed through the bouncer.
func (b *PgBouncer) URL(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		panic(fmt.Sprintf("testdb: PgBouncer.URL: %v", err))
	}
	// The bouncer authenticates clients by trust; it logs in to Postgres
	// with the server's own credentials.
	if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	u.Host = b.Addr
	return u.String()
}

// Log returns what pgbouncer logged so far, for failure messages.
func (b *PgBouncer) Log() string {
	log, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
	return string(log)
}

func pgbouncerPath() string {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("testdb: not a TCP address")
	}
	return addr.Port, nil
}

func portOr(p, def string) string {
	if p == "" {
		return def
	}
	return p
}

// pgbouncerAtLeast reports whether bin's version (pgbouncer --version:
// "PgBouncer 1.18.0") is at least major.minor.
func pgbouncerAtLeast(bin string, major, minor int) bool {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return false
	}
	return versionAtLeast(string(out), major, minor)
}

func versionAtLeast(out string, major, minor int) bool {
	first, _, _ := strings.Cut(out, "\n")
	_, v, ok := strings.Cut(strings.TrimSpace(first), " ")
	if !ok {
		return false
	}
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, err1 := strconv.Atoi(parts[0])
	mnr, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return maj > major || maj == major && mnr >= minor
}
