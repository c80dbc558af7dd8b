package store_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

func acctN(i int) string { return fmt.Sprintf("6f1c0e9a-1b2c-4d3e-8f40-%012d", i) }

// numberedByStaging returns the events' ids in staging order (0 for an
// unnumbered one), read straight from the table.
func (e *env) numberedByStaging(t *testing.T) []int64 {
	t.Helper()
	rows, _ := e.pool.Query(testkit.Context(t), `SELECT coalesce(id, 0) FROM install_events_out ORDER BY staging`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func number(t *testing.T, st *store.Store) store.Numbered {
	t.Helper()
	res, err := st.NumberEvents(testkit.Context(t), false)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Two stores on one database: a writer's events stay unnumbered (and
// unseen) until a sequencer, of either store, numbers them in one batch in
// staging order; a later batch's ids all follow the earlier batch's; each
// batch sends one notification carrying its last id.
func TestSequencerBatchesAcrossStores(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := store.New(e.pool, e.keys), store.New(e.pool, e.keys)
	c := testkit.Context(t)
	listen, err := pgx.Connect(c, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Close(context.Background())
	if _, err := listen.Exec(c, "LISTEN "+store.ChannelEventsNumbered); err != nil {
		t.Fatal(err)
	}

	if res := number(t, a); res != (store.Numbered{}) {
		t.Errorf("numbering with nothing written: %+v", res)
	}
	for i := range 3 {
		if _, err := a.ApplyInstallEvent(c, installed(acctN(i), "id", "secret", t0)); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.numberedByStaging(t); !slices.Equal(got, []int64{0, 0, 0}) {
		t.Fatalf("ids before numbering %v, want none", got)
	}
	if n := e.count(t, `SELECT count(*) FROM install_events_out WHERE id IS NOT NULL`); n != 0 {
		t.Fatalf("%d events numbered by their writers", n)
	}
	select {
	case <-a.EventsCommitted():
	default:
		t.Error("the writing store did not nudge its sequencer")
	}
	first := number(t, b) // the other replica's sequencer
	if first.Count != 3 || first.Busy || first.More {
		t.Fatalf("first batch %+v, want 3 events", first)
	}
	ids := e.numberedByStaging(t)
	if !slices.IsSorted(ids) || ids[0] == 0 || ids[2] != first.LastSeq {
		t.Fatalf("ids %v (last %d), want increasing in staging order", ids, first.LastSeq)
	}
	for i := 3; i < 5; i++ {
		if _, err := b.ApplyInstallEvent(c, installed(acctN(i), "id", "secret", t0)); err != nil {
			t.Fatal(err)
		}
	}
	second := number(t, a)
	if second.Count != 2 {
		t.Fatalf("second batch %+v, want 2 events", second)
	}
	ids = e.numberedByStaging(t)
	if !slices.IsSorted(ids) || ids[3] <= first.LastSeq {
		t.Errorf("ids %v: the second batch does not follow the first (last %d)", ids, first.LastSeq)
	}
	// One notification per batch, not per event.
	for _, want := range []int64{first.LastSeq, second.LastSeq} {
		wctx, cancel := context.WithTimeout(c, 5*time.Second)
		n, err := listen.WaitForNotification(wctx)
		cancel()
		if err != nil {
			t.Fatalf("no notification for batch ending %d: %v", want, err)
		}
		if got, _ := strconv.ParseInt(n.Payload, 10, 64); got != want {
			t.Errorf("notification %q, want %d", n.Payload, want)
		}
	}
	wctx, cancel := context.WithTimeout(c, 200*time.Millisecond)
	defer cancel()
	if n, err := listen.WaitForNotification(wctx); err == nil {
		t.Errorf("extra notification %q", n.Payload)
	}
	evs, err := a.ListLifecycleEvents(c, 0, 10)
	if err != nil || len(evs) != 5 {
		t.Fatalf("listed %d events, %v", len(evs), err)
	}
}

// A sequencer transaction that fails leaves its events unnumbered and
// unseen; the next batch numbers them. One killed while it holds the lock
// releases it with its session: meanwhile another sequencer finds the lock
// busy and does nothing, afterwards the batch goes through.
func TestSequencerFailureAndCrash(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := testkit.Context(t)
	// The first numbering fails; the second hangs (until killed).
	if _, err := e.pool.Exec(c, `CREATE SEQUENCE calls;
		CREATE FUNCTION trouble() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			CASE nextval('calls')
			WHEN 1 THEN RAISE EXCEPTION 'sequencer trouble';
			WHEN 2 THEN PERFORM pg_sleep(60);
			ELSE NULL;
			END CASE;
			RETURN NULL;
		END $$;
		CREATE TRIGGER trouble AFTER UPDATE OF id ON install_events_out FOR EACH STATEMENT EXECUTE FUNCTION trouble()`); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e.apply(t, installed(acctN(i), "id", "secret", t0), store.OutcomeInstalled)
	}
	if _, err := e.store.NumberEvents(c, false); err == nil {
		t.Fatal("numbering succeeded with its UPDATE failing")
	}
	if got := e.numberedByStaging(t); !slices.Equal(got, []int64{0, 0, 0}) {
		t.Fatalf("ids after a failed batch %v, want none", got)
	}

	done := make(chan error, 1)
	go func() { _, err := e.store.NumberEvents(c, false); done <- err }()
	var pid int
	deadline := time.Now().Add(30 * time.Second)
	for pid == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the hanging sequencer never started")
		}
		time.Sleep(20 * time.Millisecond)
		_ = e.pool.QueryRow(c, `SELECT coalesce(max(pid), 0) FROM pg_stat_activity
			WHERE query LIKE 'UPDATE install_events_out e SET id%' AND wait_event = 'PgSleep'`).Scan(&pid)
	}
	other := store.New(e.pool, e.keys)
	if res := number(t, other); !res.Busy || res.Count != 0 {
		t.Errorf("second sequencer while the first holds the lock: %+v, want busy", res)
	}
	if _, err := e.pool.Exec(c, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	// The killed batch rolled back; its call retries on a fresh connection
	// (and may find the lock still held while the killed session exits).
	if err := <-done; err != nil {
		t.Fatalf("numbering after the crash: %v", err)
	}
	// Queueing for the lock succeeds: the crash released it.
	if err := other.NumberCommittedEvents(c); err != nil {
		t.Fatalf("numbering after the crash: %v", err)
	}
	ids := e.numberedByStaging(t)
	if len(ids) != 3 || ids[0] == 0 || !slices.IsSorted(ids) {
		t.Errorf("ids after the crash %v, want all numbered in staging order", ids)
	}
	if evs, err := other.ListLifecycleEvents(c, 0, 10); err != nil || len(evs) != 3 {
		t.Errorf("listed %d events, %v", len(evs), err)
	}
}

// A writer that is still open, or that rolls back, holds up nobody: later
// commits are numbered and read past it, and an open writer that commits
// afterwards gets a larger id than those, as its commit came later.
func TestSequencerSkipsOpenAndAbortedWriters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := testkit.Context(t)
	openWriter := func(acct string) pgx.Tx {
		tx, err := e.pool.Begin(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(c, `INSERT INTO install_events_out
			(type, iris_app_id, account_id, status, occurred_at, retry_since, delivery_state)
			VALUES ('install.installed', $1, $2, 'installed', now(), now(), 'none')`, app, acct); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	aborted := openWriter(acctN(90)) // drew the smallest staging number
	late := openWriter(acctN(91))
	e.apply(t, installed(acctN(1), "id", "secret", t0), store.OutcomeInstalled)
	evs, err := e.store.ListLifecycleEvents(c, 0, 10)
	if err != nil || len(evs) != 1 || evs[0].AccountID != acctN(1) {
		t.Fatalf("with writers open: %v, %v; want the committed event", evs, err)
	}
	if err := aborted.Rollback(c); err != nil {
		t.Fatal(err)
	}
	if err := late.Commit(c); err != nil {
		t.Fatal(err)
	}
	e.apply(t, installed(acctN(2), "id", "secret", t0), store.OutcomeInstalled)
	evs, err = e.store.ListLifecycleEvents(c, evs[0].Seq, 10)
	if err != nil || len(evs) != 2 {
		t.Fatalf("after the open writers ended: %v, %v", evs, err)
	}
	// The late writer committed before acctN(2)'s event; both follow acctN(1)'s.
	if evs[0].AccountID != acctN(91) || evs[1].AccountID != acctN(2) || evs[0].Seq >= evs[1].Seq {
		t.Errorf("events %s %s, %s %s; want the late writer's, then the last install's",
			evs[0].ID(), evs[0].AccountID, evs[1].ID(), evs[1].AccountID)
	}
}
