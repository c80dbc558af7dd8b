package drills

import (
	"context"
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

// dbOutage is the size of the database outage drill.
type dbOutage struct {
	callbacks int           // each a new account
	workers   int           // concurrent retrying senders
	block     time.Duration // how long Postgres is cut off
}

// attemptLog is what the retrying client saw for one callback.
type attemptLog struct {
	attempts  int
	ok        bool
	statuses  map[int]int
	transport int // attempts that got no HTTP answer
}

// drillDatabaseOutage cuts the broker off from Postgres (a TCP proxy
// resetting every connection and refusing new ones; the server itself runs
// on) halfway through a burst of callbacks sent by a client that retries
// until it gets a 2xx. Every callback must end up stored exactly once, every
// failed attempt must have been answered 503, and every stored secret must
// open to what was sent.
func drillDatabaseOutage(t *testing.T, p dbOutage) {
	ctx := testkit.ContextWithin(t, 5*time.Minute+p.block)
	dbURL := testdb.NewDatabase(t)
	proxy := testdb.NewProxy(t, proxyTarget(t, dbURL))
	sim := newSim(t, trackunitsim.Options{})
	keys := newKeys(t)
	child := startChild(t, ctx, proxy.URL(dbURL), keys, sim, nil)

	cbs, err := harness.Presign(ctx, sim.Sim, harness.App, p.callbacks, runtime.NumCPU(), false)
	if err != nil {
		t.Fatal(err)
	}
	logs := make([]attemptLog, len(cbs))
	var (
		acked                  atomic.Int64
		blockOnce              sync.Once
		blockedAt, unblockedAt time.Time
		outage                 = make(chan struct{})
	)
	// The worker whose 2xx is the burst's middle one cuts Postgres off
	// before it sends anything else, so the rest of the burst meets the
	// outage however fast the first half went.
	cut := func() {
		blockedAt = time.Now()
		proxy.Block()
		go func() {
			defer close(outage)
			select {
			case <-ctx.Done():
			case <-time.After(p.block):
			}
			proxy.Unblock()
			unblockedAt = time.Now()
		}()
	}

	client := loadgen.HTTP1Client(p.workers)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range p.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cbs) || ctx.Err() != nil {
					return
				}
				logs[i] = sendUntilAccepted(ctx, client, child.PublicURL(), cbs[i])
				if logs[i].ok && acked.Add(1) == int64(p.callbacks/2) {
					blockOnce.Do(cut)
				}
			}
		}()
	}
	wg.Wait()
	blockOnce.Do(func() {
		t.Error("the burst never reached its middle: Postgres was never cut off")
		close(outage)
	})
	<-outage

	// Tally what the client saw.
	var attempts, unavailable, transport int
	other := map[int]int{}
	for i, l := range logs {
		if !l.ok {
			t.Errorf("callback %d never got a 2xx (%d attempts, statuses %v, %d without answer)", i, l.attempts, l.statuses, l.transport)
		}
		attempts += l.attempts
		transport += l.transport
		for status, n := range l.statuses {
			switch {
			case status == http.StatusServiceUnavailable:
				unavailable += n
			case status/100 != 2:
				other[status] += n
			}
		}
	}
	if len(other) > 0 || transport > 0 {
		t.Errorf("failed attempts answered other than 503: %v, %d without an answer", other, transport)
	}
	if unavailable == 0 {
		t.Errorf("no attempt met the outage: the drill did not bite")
	}

	// What the database holds, read directly (not through the proxy).
	st, conn := openStore(t, ctx, dbURL, keys)
	rows, events := storedInstalls(t, ctx, conn, harness.App)
	sent := map[string]harness.Callback{}
	maxEvents, redelivered := 0, 0
	for i, cb := range cbs {
		sent[cb.AccountID] = cb
		if logs[i].ok && rows[cb.AccountID] != 1 {
			t.Errorf("callback %d got a 2xx but its install has %d rows", i, rows[cb.AccountID])
		}
		// Each attempt logs at most one event; a 2xx attempt exactly one.
		if n := events[cb.AccountID]; n < 1 || n > logs[i].attempts {
			t.Errorf("account of callback %d has %d events for %d attempts", i, n, logs[i].attempts)
		}
		maxEvents = max(maxEvents, events[cb.AccountID])
		if events[cb.AccountID] > 1 {
			redelivered++
		}
	}
	if n := doubleLogged(t, ctx, conn, harness.App); n > 0 {
		t.Errorf("%d account(s) have one delivery logged twice", n)
	}
	if len(rows) != len(cbs) {
		t.Errorf("%d installs stored for %d callbacks", len(rows), len(cbs))
	}
	checkCredentials(t, ctx, st, sent, rows)
	t.Logf("database outage: %d callbacks, %d retrying workers, Postgres cut for %v after %d callbacks were acknowledged",
		p.callbacks, p.workers, unblockedAt.Sub(blockedAt).Round(time.Millisecond), p.callbacks/2)
	t.Logf("  %d attempts, %d answered 503, %d other; %d installs stored, one row each; at most %d event(s) per account",
		attempts, unavailable, len(other), len(rows), maxEvents)
	t.Logf("  %d account(s) with more than one event, each from its own delivery: a retry after a 503 whose commit had gone through",
		redelivered)
}

// sendUntilAccepted posts a callback until it is answered 2xx, backing off
// after each failure. Any answer is recorded.
func sendUntilAccepted(ctx context.Context, client *http.Client, publicURL string, cb harness.Callback) attemptLog {
	l := attemptLog{statuses: map[int]int{}}
	backoff := 20 * time.Millisecond
	for ctx.Err() == nil {
		l.attempts++
		status, _, err := cb.Post(ctx, client, publicURL)
		if err != nil {
			l.transport++
		} else {
			l.statuses[status]++
			if status/100 == 2 {
				l.ok = true
				return l
			}
			if status != http.StatusServiceUnavailable {
				return l // not worth retrying: the drill reports it
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
	return l
}
