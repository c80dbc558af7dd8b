package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// newDeliveryEnv is an env whose events are pending delivery (the
// enqueuer inserts no job: these tests drive the store directly).
func newDeliveryEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.store.SetEventEnqueuer(func(context.Context, pgx.Tx, store.InstallKey) error { return nil })
	return e
}

// The lease statement: only a numbered, due head that nobody else holds
// is leased; otherwise it says why not and until when.
func TestLeaseHeadEvent(t *testing.T) {
	t.Parallel()
	e := newDeliveryEnv(t)
	c := testkit.Context(t)
	key := store.InstallKey{IrisAppID: app, AccountID: account}
	const lease = 30 * time.Second
	lookup := func(now time.Time) store.Head {
		t.Helper()
		h, err := e.store.LeaseHeadEvent(c, key, now, lease)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}

	if h := lookup(time.Now()); !h.Idle || h.Event != nil {
		t.Fatalf("no event: got %+v, want idle", h)
	}
	e.apply(t, installed(account, "id-1", "secret-1", t0), store.OutcomeInstalled)
	if h := lookup(time.Now()); !h.Unnumbered || h.Event != nil || h.Idle {
		t.Fatalf("before numbering: got %+v, want unnumbered", h)
	}
	if err := e.store.NumberCommittedEvents(c); err != nil {
		t.Fatal(err)
	}
	e.apply(t, uninstalled(account, t0.Add(time.Minute)), store.OutcomeUninstalled) // behind the head
	if err := e.store.NumberCommittedEvents(c); err != nil {
		t.Fatal(err)
	}
	// Events are due from their commit (the database's clock).
	t0 := time.Now().UTC().Truncate(time.Microsecond)

	h := lookup(t0)
	if h.Event == nil || h.Event.Type != store.EventInstalled || h.Event.Seq == 0 {
		t.Fatalf("first lease: got %+v, want the install event leased", h)
	}
	first := *h.Event
	if first.LeasedUntil == nil || !first.LeasedUntil.Equal(t0.Add(lease)) ||
		first.FirstAttemptAt == nil || !first.FirstAttemptAt.Equal(t0) {
		t.Fatalf("first lease: leased until %v, first attempt %v", first.LeasedUntil, first.FirstAttemptAt)
	}

	// Another worker meanwhile: it waits for the lease, and the event
	// behind the head is not offered.
	if h := lookup(t0.Add(time.Second)); h.Event != nil || h.Idle || !h.Wait.Equal(t0.Add(lease)) {
		t.Fatalf("while leased: got %+v, want wait until %v", h, t0.Add(lease))
	}

	// A failed attempt: the head waits for its next attempt, then is
	// leased again, keeping its first attempt time.
	next := t0.Add(5 * time.Second)
	if err := e.store.MarkEventFailed(c, first.Seq, next, "http_500"); err != nil {
		t.Fatal(err)
	}
	if h := lookup(t0.Add(2 * time.Second)); h.Event != nil || !h.Wait.Equal(next) {
		t.Fatalf("after a failure: got %+v, want wait until %v", h, next)
	}
	h = lookup(next)
	if h.Event == nil || h.Event.Seq != first.Seq || h.Event.Attempts != 1 ||
		!h.Event.FirstAttemptAt.Equal(t0) || !h.Event.LeasedUntil.Equal(next.Add(lease)) {
		t.Fatalf("second lease: got %+v", h.Event)
	}

	// Delivered: the next event becomes the head (and the job goes on).
	idle, err := e.store.MarkDeliveredFinishIfIdle(c, key, first.Seq, next, func(pgx.Tx) error {
		t.Error("the job was finished with an event pending")
		return nil
	})
	if err != nil || idle {
		t.Fatalf("marking the head delivered: idle %v, %v; want the next event pending", idle, err)
	}
	h = lookup(next)
	if h.Event == nil || h.Event.Type != store.EventUninstalled || h.Event.Seq <= first.Seq {
		t.Fatalf("after delivery: got %+v, want the uninstall event leased", h.Event)
	}
}

// A writer holding the install's row lock (as every event writer does
// while it enqueues) makes the finishing transaction wait, and its event
// is then seen: the job is not completed with an event left behind.
func TestFinishDeliverySeesWriterHoldingTheRowLock(t *testing.T) {
	t.Parallel()
	e := newDeliveryEnv(t)
	c := testkit.Context(t)
	key := store.InstallKey{IrisAppID: app, AccountID: account}
	e.apply(t, installed(account, "id-1", "secret-1", t0), store.OutcomeInstalled)
	if err := e.store.NumberCommittedEvents(c); err != nil {
		t.Fatal(err)
	}
	h, err := e.store.LeaseHeadEvent(c, key, time.Now(), time.Minute)
	if err != nil || h.Event == nil {
		t.Fatalf("lease: %+v, %v", h, err)
	}

	writer, err := e.pool.Begin(c)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = writer.Rollback(c) }()
	if _, err := writer.Exec(c, `SELECT 1 FROM installs WHERE iris_app_id = $1 AND account_id = $2 FOR UPDATE`,
		app, account); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Exec(c, `INSERT INTO install_events_out
		(type, iris_app_id, account_id, status, occurred_at, retry_since, delivery_state, next_attempt_at)
		VALUES ('install.uninstalled', $1, $2, 'UNINSTALLED', now(), now(), 'pending', now())`, app, account); err != nil {
		t.Fatal(err)
	}

	type result struct {
		idle, ran bool
		err       error
	}
	done := make(chan result, 1)
	go func() {
		var ran bool
		idle, err := e.store.MarkDeliveredFinishIfIdle(c, key, h.Event.Seq, t0, func(pgx.Tx) error {
			ran = true
			return nil
		})
		done <- result{idle, ran, err}
	}()
	testkit.WaitFor(t, "the finishing transaction to wait for the row lock", func() bool {
		return e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%FOR SHARE OF installs%'`) == 1
	})
	select {
	case r := <-done:
		t.Fatalf("finished while the writer held the row lock: %+v", r)
	default:
	}
	if err := writer.Commit(c); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.idle || r.ran {
		t.Fatalf("after the writer committed: idle %v, completed %v, err %v; want the new event seen", r.idle, r.ran, r.err)
	}
	ev, err := e.store.LifecycleEvent(c, h.Event.Seq)
	if err != nil || ev.DeliveryState != store.DeliveryDelivered || ev.Attempts != 1 {
		t.Fatalf("delivered event: %+v, %v", ev, err)
	}

	// The second event delivered: idle, and the completion runs in the
	// transaction, whose commit is asynchronous.
	if err := e.store.NumberCommittedEvents(c); err != nil {
		t.Fatal(err)
	}
	h, err = e.store.LeaseHeadEvent(c, key, time.Now(), time.Minute)
	if err != nil || h.Event == nil || h.Event.Type != store.EventUninstalled {
		t.Fatalf("second lease: %+v, %v", h, err)
	}
	var setting string
	idle, err := e.store.MarkDeliveredFinishIfIdle(c, key, h.Event.Seq, t0, func(tx pgx.Tx) error {
		return tx.QueryRow(c, `SELECT current_setting('synchronous_commit')`).Scan(&setting)
	})
	if err != nil || !idle || setting != "off" {
		t.Fatalf("last delivery: idle %v, synchronous_commit %q, err %v", idle, setting, err)
	}
	if n := e.count(t, `SELECT count(*) FROM install_events_out WHERE delivery_state = 'pending'`); n != 0 {
		t.Errorf("%d events still pending", n)
	}
}
