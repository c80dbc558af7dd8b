package drills

import (
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// kill is the size of the SIGKILL drill.
type kill struct {
	callbacks int // pre-signed, each a new account; the kill comes first
	killAfter int // 2xx answers before the SIGKILL
	workers   int // callback senders
	tokens    int // GetToken workers beside them
}

// drillKill SIGKILLs the broker while callbacks and token calls are in
// flight, restarts it on the same database, and checks that every callback
// answered 2xx is stored, that every stored install opens to the
// credentials its callback carried (no torn or corrupt row), that every
// install has its event, and that the restarted broker serves tokens.
func drillKill(t *testing.T, p kill) {
	ctx := testkit.ContextWithin(t, 5*time.Minute)
	dbURL := testdb.NewDatabase(t)
	sim := newSim(t, trackunitsim.Options{})
	keys := newKeys(t)
	first := startChild(t, ctx, dbURL, keys, sim, nil)

	cbs, err := harness.Presign(ctx, sim.Sim, harness.App, p.callbacks, runtime.NumCPU(), true)
	if err != nil {
		t.Fatal(err)
	}
	// A few installs exist before the load, for the token workers.
	const warm = 4
	client := loadgen.HTTP1Client(p.workers + p.tokens)
	for _, cb := range cbs[:warm] {
		if err := cb.PostInstalled(ctx, client, first.PublicURL()); err != nil {
			t.Fatal(err)
		}
	}
	acked := make([]bool, len(cbs))
	for i := range warm {
		acked[i] = true
	}
	var next, ackCount, tokenCalls atomic.Int64
	next.Store(warm)
	// The worker whose 2xx reaches killAfter kills the broker at once, so
	// the kill lands while the other workers' calls are in flight.
	var killOnce sync.Once
	kill := func() {
		if err := first.Kill(); err != nil {
			t.Errorf("SIGKILL: %v", err)
		}
	}
	var wg, senders sync.WaitGroup
	sendersDone := make(chan struct{})
	for range p.workers {
		wg.Add(1)
		senders.Add(1)
		go func() {
			defer wg.Done()
			defer senders.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cbs) {
					return
				}
				status, _, err := cbs[i].Post(ctx, client, first.PublicURL())
				if err != nil {
					return // the broker is gone
				}
				if status != http.StatusOK {
					t.Errorf("callback %d answered %d before the kill", i, status)
					return
				}
				acked[i] = true
				if ackCount.Add(1) == int64(p.killAfter) {
					killOnce.Do(kill)
				}
			}
		}()
	}
	for w := range p.tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := harness.TokenRequestBody(harness.App, cbs[w%warm].AccountID)
			for {
				select {
				case <-sendersDone: // no kill came: stop anyway
					return
				default:
				}
				if _, err := harness.GetTokenJSON(ctx, client, first.InternalURL(), body); err != nil {
					return // the broker is gone
				}
				tokenCalls.Add(1)
			}
		}()
	}
	senders.Wait()
	close(sendersDone)
	wg.Wait()
	if ackCount.Load() < int64(p.killAfter) {
		t.Fatalf("only %d callbacks were answered: the broker was never killed under load", ackCount.Load())
	}
	started := int(next.Load())

	restarted := time.Now()
	second := startChild(t, ctx, dbURL, keys, sim, nil)
	restart := time.Since(restarted)

	st, conn := openStore(t, ctx, dbURL, keys)
	rows, events := storedInstalls(t, ctx, conn, harness.App)
	sent := map[string]harness.Callback{}
	var ackedN, unackedStored int
	for i, cb := range cbs {
		sent[cb.AccountID] = cb
		switch {
		case acked[i]:
			ackedN++
			if rows[cb.AccountID] != 1 {
				t.Errorf("callback %d was answered 2xx before the kill but is not stored", i)
			}
		case rows[cb.AccountID] == 1:
			unackedStored++ // committed, answer lost with the process: allowed
		}
		if rows[cb.AccountID] == 1 && events[cb.AccountID] != 1 {
			t.Errorf("install of callback %d has %d events, want 1", i, events[cb.AccountID])
		}
	}
	checkCredentials(t, ctx, st, sent, rows)
	if n := doubleLogged(t, ctx, conn, harness.App); n > 0 {
		t.Errorf("%d account(s) have one delivery logged twice", n)
	}
	a, err := harness.GetTokenJSON(ctx, client, second.InternalURL(), harness.TokenRequestBody(harness.App, cbs[warm].AccountID))
	if err != nil || a.HTTPStatus != http.StatusOK {
		t.Errorf("the restarted broker does not serve a token for an install made before the kill: %d %s %v", a.HTTPStatus, a.Code, err)
	}
	t.Logf("SIGKILL under load: %d callbacks started, %d answered 2xx before the kill, %d more committed without an answer; %d token calls",
		min(started, len(cbs)), ackedN, unackedStored, tokenCalls.Load())
	t.Logf("  restart to ready in %v; %d installs stored, every one opens to its callback's credentials",
		restart.Round(time.Millisecond), len(rows))
}
