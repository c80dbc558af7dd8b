package store_test

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// proxied returns a store whose every connection, Listen's included, goes
// through a proxy the test can cut.
func proxied(t *testing.T, e *env) (*store.Store, *testdb.Proxy) {
	t.Helper()
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	p := testdb.NewProxy(t, u.Host)
	pool, err := store.Open(context.Background(), p.URL(e.url))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return store.New(pool, e.keys, store.WithClock(e.clock.Now)), p
}

// TestDatabaseOutage: while the connection to Postgres is cut,
// ApplyInstallEvent fails promptly with an error (no hang, nothing
// committed); once it is back, the next call succeeds.
func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s, p := proxied(t, e)
	if _, err := s.ApplyInstallEvent(testkit.Context(t), installed(account, "cid", "s1", t0)); err != nil {
		t.Fatalf("before the outage: %v", err)
	}
	// Fill the pool with connections that will all be dead after Block.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.ApplyInstallEvent(testkit.Context(t), installed(acct(100+i), "cid", "s", t0)); err != nil {
				t.Errorf("warming the pool: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := s.Ping(testkit.Context(t)); err != nil {
		t.Fatalf("Ping before the outage: %v", err)
	}

	p.Block()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := s.ApplyInstallEvent(c, installed(account, "cid", "s2", t0.Add(time.Second)))
	if err == nil {
		t.Fatalf("ApplyInstallEvent during the outage = %q, want an error", out)
	}
	if c.Err() != nil {
		t.Errorf("ApplyInstallEvent hung until its deadline instead of failing: %v", err)
	}
	if err := s.Ping(c); err == nil {
		t.Errorf("Ping during the outage succeeded")
	}
	if got := e.creds(t, account); got.ClientSecret != "s1" || got.Version != 1 {
		t.Errorf("the failed event changed the install: version %d", got.Version)
	}

	p.Unblock()
	// The first call after the outage succeeds, even though the pool may
	// still hold connections that died in it.
	if _, err := s.ApplyInstallEvent(testkit.Context(t), installed(account, "cid", "s2", t0.Add(time.Second))); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	if _, err := s.InstallCredentials(testkit.Context(t), app, acct(100)); err != nil {
		t.Fatalf("InstallCredentials after the outage: %v", err)
	}
	if got := e.creds(t, account); got.ClientSecret != "s2" {
		t.Errorf("after the outage the secret is %q", got.ClientSecret.Reveal())
	}
}

// TestListenSurvivesOutage: Listen reconnects once the proxy lets it
// through again, signals the gap with onReset, and delivers again.
func TestListenSurvivesOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s, p := proxied(t, e)
	l := startListener(t, s)
	receive(t, l.resets, "the first onReset")

	p.Block()
	// Changes during the outage are lost to the listener; onReset covers them.
	e.apply(t, installed(account, "cid", "s1", t0), store.OutcomeInstalled)
	p.Unblock()
	receive(t, l.resets, "onReset after the outage")

	e.apply(t, installed(account, "cid", "s2", t0.Add(time.Second)), store.OutcomeInstalled)
	if got := receive(t, l.changes, "a change after the outage"); got != (change{app, account}) {
		t.Errorf("change = %v", got)
	}
}
