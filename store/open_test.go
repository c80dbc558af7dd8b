package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

func TestOpen(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"postgres://user:hunter2secret@host:notaport/db", "host=x password=hunter2secret port=nope"} {
		_, err := store.Open(context.Background(), bad)
		if err == nil {
			t.Errorf("Open(malformed) succeeded")
		} else if strings.Contains(err.Error(), "hunter2secret") {
			t.Errorf("Open error %q reveals the password", err)
		}
	}
	// Nothing listens on port 1: Open still succeeds (no connection yet),
	// and the failure surfaces on use.
	pool, err := store.Open(context.Background(), "postgres://u@127.0.0.1:1/db?pool_max_conns=3")
	if err != nil {
		t.Fatalf("Open without a reachable database: %v", err)
	}
	defer pool.Close()
	if got := pool.Config().MaxConns; got != 3 {
		t.Errorf("MaxConns = %d, want the URL's 3", got)
	}
	if err := store.New(pool, testkit.Keyring(t, "k:"+testkit.Key(1))).Ping(testkit.Context(t)); err == nil {
		t.Errorf("Ping of an unreachable database succeeded")
	}
	pool2, err := store.Open(context.Background(), "postgres://u@127.0.0.1:1/db")
	if err != nil {
		t.Fatal(err)
	}
	defer pool2.Close()
	if got := pool2.Config().MaxConns; got != 16 {
		t.Errorf("default MaxConns = %d, want 16", got)
	}
}
