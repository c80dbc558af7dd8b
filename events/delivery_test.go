package events_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

func allDelivered(r *rig) func() bool {
	return func() bool {
		evs, err := r.st.ListLifecycleEvents(context.Background(), 0, 10000)
		if err != nil {
			return false
		}
		for _, ev := range evs {
			if ev.DeliveryState != store.DeliveryDelivered {
				return false
			}
		}
		return len(evs) > 0
	}
}

// A delivered webhook carries the Standard Webhooks headers, a signature an
// independent verifier accepts, and the contract's payload.
func TestWebhookDeliveredSigned(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	r := newRig(t, recv.srv.URL, "", nil)
	before := time.Now().Unix()
	r.install(t, 1, "a")
	testkit.WaitFor(t, "the event delivered", allDelivered(r))
	got := recv.requests()
	if len(got) != 1 {
		t.Fatalf("%d requests, want 1", len(got))
	}
	g := got[0]
	ev := r.events(t)[0]
	if g.ID != ev.ID() || !g.Verified {
		t.Errorf("webhook-id %q (event %q), signature verified %v", g.ID, ev.ID(), g.Verified)
	}
	if ts, _ := strconv.ParseInt(g.Timestamp, 10, 64); ts < before-1 || ts > time.Now().Unix()+1 {
		t.Errorf("webhook-timestamp %q not the attempt's time", g.Timestamp)
	}
	if g.Type != store.EventInstalled || g.Event.ID != ev.ID() || g.Event.IrisAppID != app ||
		g.Event.AccountID != account(1) || g.Event.Status != "installed" || g.Event.OccurredAt == "" {
		t.Errorf("payload %s", g.Body)
	}
	// Counted once the delivery's transaction committed, just after the
	// state the test waited for became visible.
	testkit.WaitForWithin(t, 5*time.Second, "the delivery counted", func() bool { n, _, _ := r.obs.counts(); return n >= 1 })
	if n, _, _ := r.obs.counts(); n != 1 {
		t.Errorf("delivered counted %d times", n)
	}
}

// A 500 and a hang are retried, with the same webhook-id every time.
func TestWebhookRetriedAfter500AndHang(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	recv.setAnswer(func(n int) int {
		switch n {
		case 0:
			return http.StatusInternalServerError
		case 1:
			return 0 // hang past the attempt time-out
		}
		return http.StatusOK
	})
	r := newRig(t, recv.srv.URL, "", nil)
	r.install(t, 1, "a")
	testkit.WaitFor(t, "the event delivered", allDelivered(r))
	got := recv.requests()
	if len(got) != 3 {
		t.Fatalf("%d requests, want 3", len(got))
	}
	for _, g := range got {
		if g.ID != got[0].ID || !g.Verified {
			t.Errorf("attempt with webhook-id %q (first %q), verified %v", g.ID, got[0].ID, g.Verified)
		}
	}
	ev := r.events(t)[0]
	if _, retried, _ := r.obs.counts(); ev.Attempts != 3 || retried != 2 {
		t.Errorf("attempts %d, retries counted %d; want 3 and 2", ev.Attempts, retried)
	}
}

// After the maximum age a failing event is given up, counted, and the
// install's next event is delivered; an admin's redelivery then delivers
// it with the same webhook-id.
func TestWebhookGivenUpThenRedelivered(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	recv.setAnswer(func(int) int { return http.StatusServiceUnavailable })
	r := newRig(t, recv.srv.URL, "", nil)
	r.install(t, 1, "a")
	testkit.WaitFor(t, "a failed attempt", func() bool { return len(recv.requests()) >= 2 })
	if ev := r.events(t)[0]; ev.DeliveryState != store.DeliveryPending {
		t.Fatalf("state %q before the maximum age, want pending", ev.DeliveryState)
	}
	r.clock.Advance(24*time.Hour + time.Minute)
	testkit.WaitFor(t, "the event given up", func() bool {
		return r.events(t)[0].DeliveryState == store.DeliveryGivenUp
	})
	if _, _, givenUp := r.obs.counts(); givenUp != 1 {
		t.Errorf("given up counted %d times", givenUp)
	}

	recv.setAnswer(func(int) int { return http.StatusOK })
	r.uninstall(t, 1)
	testkit.WaitFor(t, "the next event delivered", func() bool {
		evs := r.events(t)
		return len(evs) == 2 && evs[1].DeliveryState == store.DeliveryDelivered
	})
	first := r.events(t)[0]
	if _, err := r.d.Redeliver(context.Background(), first.Seq); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the redelivered event delivered", allDelivered(r))
	got := recv.requests()
	last := got[len(got)-1]
	if last.ID != first.ID() || !last.Verified {
		t.Errorf("redelivery webhook-id %q, want %q; verified %v", last.ID, first.ID(), last.Verified)
	}
}

// The receiver down for every callback, then back: every event delivered,
// in order per install, and an event delivered twice only after a failed
// attempt of it.
func TestWebhookReceiverDownThenBack(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	recv.setAnswer(func(int) int { return http.StatusBadGateway })
	r := newRig(t, recv.srv.URL, "", nil)
	const installs, rounds = 10, 5
	for round := range rounds {
		for i := range installs {
			if round%2 == 0 {
				r.install(t, i, strconv.Itoa(round))
			} else {
				r.uninstall(t, i)
			}
		}
	}
	if n := len(r.events(t)); n != installs*rounds {
		t.Fatalf("%d events, want %d", n, installs*rounds)
	}
	time.Sleep(300 * time.Millisecond)
	recv.setAnswer(func(int) int { return http.StatusOK })
	testkit.WaitFor(t, "every event delivered", allDelivered(r))
	if n := checkOrderAndDuplicates(t, recv.requests()); n != installs*rounds {
		t.Errorf("%d distinct events delivered, want %d", n, installs*rounds)
	}
}

// checkOrderAndDuplicates: per install, successful deliveries follow id
// order, and an id is sent again only after a failed attempt of it.
func checkOrderAndDuplicates(t *testing.T, got []received) int {
	t.Helper()
	lastOK := map[string]string{} // account -> last delivered id
	delivered := map[string]bool{}
	for _, g := range got {
		if !g.Verified {
			t.Errorf("unverified signature on %s", g.ID)
		}
		if delivered[g.ID] {
			t.Errorf("event %s sent again after a 2xx", g.ID)
		}
		acct := g.Event.AccountID
		if g.ID < lastOK[acct] {
			t.Errorf("install %s: %s sent after the later %s was delivered", acct, g.ID, lastOK[acct])
		}
		if g.Status >= 200 && g.Status < 300 {
			delivered[g.ID] = true
			lastOK[acct] = g.ID
		}
	}
	return len(delivered)
}

// The delivery job sends nothing of an install before its head event has
// its public id: while numbering fails, nothing is sent and the events stay
// unnumbered; once it works, the job numbers them itself (no sequencer
// runs in this rig) and delivers them in order with webhook-id = the id.
func TestDeliveryWaitsForNumbering(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	r := newRig(t, recv.srv.URL, "", nil)
	ctx := context.Background()
	if _, err := r.pool.Exec(ctx, `CREATE TABLE hold (on_hold boolean NOT NULL);
		INSERT INTO hold VALUES (true);
		CREATE FUNCTION hold_numbering() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF (SELECT on_hold FROM hold) THEN RAISE EXCEPTION 'numbering on hold'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER hold_numbering BEFORE UPDATE OF id ON install_events_out
			FOR EACH ROW WHEN (OLD.id IS NULL) EXECUTE FUNCTION hold_numbering()`); err != nil {
		t.Fatal(err)
	}
	r.install(t, 1, "a")
	r.uninstall(t, 1)
	unnumbered := func() int {
		var n int
		if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM install_events_out WHERE id IS NULL`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Long enough for the job to run and retry at least once.
	time.Sleep(1500 * time.Millisecond)
	if got := recv.requests(); len(got) != 0 {
		t.Fatalf("%d requests before the events were numbered (first webhook-id %q)", len(got), got[0].ID)
	}
	if n := unnumbered(); n != 2 {
		t.Fatalf("%d unnumbered events, want 2", n)
	}
	if _, err := r.pool.Exec(ctx, `UPDATE hold SET on_hold = false`); err != nil {
		t.Fatal(err)
	}
	testkit.WaitForWithin(t, 20*time.Second, "both events delivered", func() bool { return len(recv.requests()) >= 2 })
	got := recv.requests()
	evs := r.events(t)
	if len(got) != 2 || len(evs) != 2 {
		t.Fatalf("%d requests, %d events; want 2 of each", len(got), len(evs))
	}
	for i, g := range got {
		if g.ID != evs[i].ID() || !g.Verified || g.Status != http.StatusNoContent {
			t.Errorf("request %d: webhook-id %q status %d verified %v, want event %q", i, g.ID, g.Status, g.Verified, evs[i].ID())
		}
	}
	if got[0].Type != store.EventInstalled || got[1].Type != store.EventUninstalled {
		t.Errorf("delivered %s then %s, want installed then uninstalled", got[0].Type, got[1].Type)
	}
}

// A replica without a webhook on the same database never takes a delivery
// job: every event is delivered by the replica that has one, well before
// the sweeper (30 s) would queue again an install whose job was taken and
// dropped elsewhere.
func TestReplicaWithoutWebhookLeavesDeliveries(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	dbURL := testdb.NewDatabase(t)
	r := newRig(t, recv.srv.URL, dbURL, nil)
	newRig(t, "", dbURL, nil) // polls every 100 ms, as r does
	const n = 20
	for i := range n {
		r.install(t, i, "a")
	}
	testkit.WaitForWithin(t, 10*time.Second, "every event delivered by the replica with a webhook", allDelivered(r))
	if got := len(recv.requests()); got != n {
		t.Errorf("%d webhook requests, want %d", got, n)
	}
}

// The sweeper runs even when River's leader is a replica without a
// webhook: the leader queues the sweep, a replica with a webhook works it
// and delivers a pending event whose delivery job was lost.
func TestSweepQueuedByLeaderWithoutWebhook(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	dbURL := testdb.NewDatabase(t)
	leader := newRig(t, "", dbURL, nil) // started first, so River's leader
	// A pending event with no job, as after a discarded job.
	leader.st.SetEventEnqueuer(func(context.Context, pgx.Tx, store.InstallKey) error { return nil })
	leader.install(t, 1, "a")
	sweepQueued := func() bool {
		var n int
		err := leader.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM river_job WHERE kind = 'irisx_event_sweep' AND queue = 'irisx_event_delivery'`).Scan(&n)
		return err == nil && n == 1
	}
	testkit.WaitForWithin(t, 30*time.Second, "the leader without a webhook queues the sweep", sweepQueued)
	r := newRig(t, recv.srv.URL, dbURL, nil)
	testkit.WaitForWithin(t, 20*time.Second, "the event delivered by the replica with a webhook", allDelivered(r))
	if got := len(recv.requests()); got != 1 {
		t.Errorf("%d webhook requests, want 1", got)
	}
}
