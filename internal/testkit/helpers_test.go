package testkit

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
)

// fakeT records a Fatalf instead of failing the real test; like the real
// one it ends the goroutine that called it.
type fakeT struct {
	testing.TB
	fatal chan string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.fatal <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runFake runs fn with a fakeT in its own goroutine and returns the Fatalf
// message, "" when fn returned without one.
func runFake(t *testing.T, fn func(testing.TB)) string {
	f := &fakeT{TB: t, fatal: make(chan string, 1)}
	done := make(chan struct{})
	go func() { defer close(done); fn(f) }()
	<-done
	select {
	case msg := <-f.fatal:
		return msg
	default:
		return ""
	}
}

func TestContextEndsWithTheTest(t *testing.T) {
	var ctx context.Context
	t.Run("inner", func(t *testing.T) {
		ctx = Context(t)
		if _, ok := ctx.Deadline(); !ok {
			t.Error("Context has no deadline")
		}
		if ctx.Err() != nil {
			t.Errorf("Context already done: %v", ctx.Err())
		}
	})
	if ctx.Err() == nil {
		t.Error("Context still live after its test ended")
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, "the third look", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
	msg := runFake(t, func(tb testing.TB) { WaitForWithin(tb, time.Millisecond, "never", func() bool { return false }) })
	if msg != "timed out waiting for never" {
		t.Errorf("WaitFor on a cond that never holds: %q", msg)
	}
}

func TestPostJSON(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprintf(w, "%s %s %s %s", r.Method, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), b)
	}))
	defer srv.Close()
	status, answer := PostJSON(t, srv.URL, `{"a":1}`, Bearer("tok"))
	if want := `POST application/json Bearer tok {"a":1}`; status != http.StatusTeapot || answer != want {
		t.Errorf("PostJSON = %d %q, want 418 %q", status, answer, want)
	}
	if _, answer := PostJSON(t, srv.URL, `{}`, Bearer("")); answer != "POST application/json  {}" {
		t.Errorf("without a bearer: %q", answer)
	}
}

func TestKeyring(t *testing.T) {
	if Key(1) == Key(2) {
		t.Fatal("Key gives two seeds the same key")
	}
	k := Keyring(t, "k2:"+Key(2)+",k1:"+Key(1))
	loc := crypto.Location{Table: "t", Row: "r", Column: "c"}
	id, ct, err := k.Seal([]byte("plain"), loc)
	if err != nil || id != "k2" {
		t.Fatalf("Seal = %q, %v; want the primary k2", id, err)
	}
	if got, err := Keyring(t, "k1:"+Key(1)+",k2:"+Key(2)).Open(id, ct, loc); err != nil || string(got) != "plain" {
		t.Errorf("Open = %q, %v", got, err)
	}
	Keyring(t, KeySpec)
	msg := runFake(t, func(tb testing.TB) { Keyring(tb, "k1:"+Key(1)[:10]) })
	if !strings.HasPrefix(msg, "parse the test keyring: ") || strings.Contains(msg, Key(1)[:10]) {
		t.Errorf("a bad spec: %q, want a failure without the key", msg)
	}
}

func TestDumpTables(t *testing.T) {
	pool := testdb.NewPool(t)
	if _, err := pool.Exec(Context(t), `CREATE TABLE dump_probe (id int, secret bytea);
		INSERT INTO dump_probe VALUES (1, 'hi'), (2, NULL)`); err != nil {
		t.Fatal(err)
	}
	if got, want := DumpTables(t, pool, "dump_probe"), "dump_probe: (1,\"\\\\x6869\")\ndump_probe: (2,)\n"; got != want {
		t.Errorf("DumpTables(dump_probe) = %q, want %q", got, want)
	}
	all := DumpTables(t, pool)
	if !strings.Contains(all, "dump_probe: (1,") || !strings.Contains(all, "schema_migrations: ") {
		t.Errorf("DumpTables() misses tables:\n%s", all)
	}
}
