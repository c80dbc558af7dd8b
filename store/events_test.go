package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

func (e *env) eventTypes(t *testing.T) []string {
	t.Helper()
	evs, err := e.store.ListLifecycleEvents(testkit.Context(t), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type+":"+ev.AccountID)
	}
	return types
}

// Each lifecycle event comes from its real cause, and duplicates, stale,
// ignored callbacks and no-op rejections make none.
func TestLifecycleEventsFromTheirCauses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var observed []string
	e.store = store.New(e.pool, e.keys, store.WithClock(e.clock.Now),
		store.WithEventObserver(func(typ string) { observed = append(observed, typ) }))
	c := testkit.Context(t)

	e.apply(t, installed(account, "id-1", "secret-1", t0), store.OutcomeInstalled)                  // first install: event
	e.apply(t, installed(account, "id-1", "secret-1", t0), store.OutcomeInstalled)                  // duplicate: none
	e.apply(t, installed(account, "id-1", "secret-1", t0.Add(time.Second)), store.OutcomeInstalled) // repeat, same credentials: none
	e.apply(t, installed(account, "id-0", "secret-0", t0.Add(-time.Hour)), store.OutcomeStale)      // stale: none
	ignored := installed(account, "", "", t0.Add(2*time.Second))
	ignored.Type = "SOMETHING_ELSE"
	e.apply(t, ignored, store.OutcomeIgnored)                                                         // ignored: none
	e.apply(t, installed(account, "id-2", "secret-2", t0.Add(3*time.Second)), store.OutcomeInstalled) // new credentials: event

	v := e.creds(t, account).Version
	if err := e.store.MarkCredentialsRejected(c, app, account, v-1, "invalid_client"); err != nil { // old version: none
		t.Fatal(err)
	}
	if err := e.store.MarkCredentialsRejected(c, app, account, v, "invalid_client"); err != nil { // event
		t.Fatal(err)
	}
	if err := e.store.MarkCredentialsRejected(c, app, account, v, "invalid_client"); err != nil { // already marked: none
		t.Fatal(err)
	}
	e.apply(t, uninstalled(account, t0.Add(4*time.Second)), store.OutcomeUninstalled) // event
	e.apply(t, uninstalled(account, t0.Add(5*time.Second)), store.OutcomeUninstalled) // repeat: none
	e.apply(t, uninstalled(other, t0), store.OutcomeUninstalled)                      // unknown install, recorded as uninstalled: event

	want := []string{
		store.EventInstalled + ":" + account,
		store.EventInstalled + ":" + account,
		store.EventCredentialsRejected + ":" + account,
		store.EventUninstalled + ":" + account,
		store.EventUninstalled + ":" + other,
	}
	if got := e.eventTypes(t); !slices.Equal(got, want) {
		t.Errorf("events = %q\nwant %q", got, want)
	}
	wantObserved := []string{store.EventInstalled, store.EventInstalled, store.EventCredentialsRejected,
		store.EventUninstalled, store.EventUninstalled}
	if !slices.Equal(observed, wantObserved) {
		t.Errorf("observed %q, want %q", observed, wantObserved)
	}
	evs, _ := e.store.ListLifecycleEvents(c, 0, 10)
	for _, ev := range evs {
		if ev.DeliveryState != store.DeliveryNone {
			t.Errorf("event %s delivery state %q without a webhook, want none", ev.ID(), ev.DeliveryState)
		}
	}
	if evs[0].Status != store.StatusInstalled || evs[2].Status != store.StatusCredentialsRejected || evs[3].Status != store.StatusUninstalled {
		t.Errorf("statuses %q %q %q", evs[0].Status, evs[2].Status, evs[3].Status)
	}
}

// No secret reaches the events table, in any column.
func TestLifecycleEventsHoldNoSecret(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply(t, installed(account, "client-id-visible", "super-secret-value", t0), store.OutcomeInstalled)
	var dump string
	if err := e.pool.QueryRow(testkit.Context(t), `SELECT string_agg(e::text, ' ') FROM install_events_out e`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"client-id-visible", "super-secret-value"} {
		if strings.Contains(dump, s) {
			t.Errorf("events table holds %q: %s", s, dump)
		}
	}
}

// A failed event write rolls the change back: no change without its event.
func TestLifecycleEventWriteFailureRollsBackTheChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.store.SetEventEnqueuer(func(context.Context, pgx.Tx, store.InstallKey) error {
		return fmt.Errorf("queue down")
	})
	if _, err := e.store.ApplyInstallEvent(testkit.Context(t), installed(account, "id", "secret", t0)); err == nil {
		t.Fatal("ApplyInstallEvent succeeded with the event write failing")
	}
	if n := e.count(t, `SELECT count(*) FROM installs`); n != 0 {
		t.Errorf("%d installs stored without their event", n)
	}
	if n := e.count(t, `SELECT count(*) FROM install_events_out`); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

// Two store instances (two replicas) interleaving commits, each running
// its sequencer: ids sort in commit order, so a reader polling "after the
// last id seen" never misses an event: what it collects equals the table.
func TestLifecycleEventIDsSortInCommitOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	replicas := []*store.Store{
		store.New(e.pool, e.keys),
		store.New(e.pool, e.keys),
	}
	// The enqueuer sleeps inside the transaction, before the event row is
	// written, so transactions overlap heavily.
	for i, r := range replicas {
		r.SetEventEnqueuer(func(ctx context.Context, tx pgx.Tx, _ store.InstallKey) error {
			time.Sleep(time.Duration(i+1) * time.Millisecond)
			return nil
		})
	}
	const perReplica = 40
	c := testkit.Context(t)
	// Pauses before the commit, as a slow WAL flush makes: after a writer
	// drew its staging number, and after a sequencer batch drew its ids.
	// Ids drawn by a plain sequence in the writer would then often commit
	// (and be read) before a smaller one.
	if _, err := e.pool.Exec(c, `CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN PERFORM pg_sleep(random() * 0.01); RETURN NULL; END $$;
		CREATE TRIGGER slow_commit AFTER INSERT ON install_events_out FOR EACH ROW EXECUTE FUNCTION slow_commit();
		CREATE TRIGGER slow_batch AFTER UPDATE ON install_events_out FOR EACH STATEMENT EXECUTE FUNCTION slow_commit()`); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var seen []int64
	var readErr error
	var rwg sync.WaitGroup
	batches := make([]int, len(replicas))
	for i, r := range replicas { // each replica's sequencer, polling hard
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := r.NumberEvents(c, false)
				if err != nil {
					t.Error(err)
					return
				}
				if res.Count > 0 {
					batches[i]++
				}
			}
		}()
	}
	rwg.Add(1)
	go func() { // a reader paging by the last id seen, as WatchEvents does
		defer rwg.Done()
		var after int64
		for {
			// Whether the writers were done is read before the page, so a
			// final empty page after that is proof nothing is left.
			var done bool
			select {
			case <-stop:
				done = true
			default:
			}
			evs, err := e.store.ListLifecycleEvents(c, after, 1000)
			if err != nil {
				readErr = err
				return
			}
			for _, ev := range evs {
				seen = append(seen, ev.Seq)
				after = ev.Seq
			}
			if done && len(evs) == 0 {
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for r, st := range replicas {
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perReplica / 4 {
					acct := fmt.Sprintf("6f1c0e9a-1b2c-4d3e-8f40-%04d%04d%04d", r, w, i)
					if _, err := st.ApplyInstallEvent(c, installed(acct, "id", "secret", t0)); err != nil {
						t.Error(err)
					}
				}
			}()
		}
	}
	wg.Wait()
	close(stop)
	rwg.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	t.Logf("batches by replica: %v", batches)
	if len(seen) != 2*perReplica {
		t.Fatalf("reader saw %d events, want %d (a smaller id committed after a larger one was read)", len(seen), 2*perReplica)
	}
	if !slices.IsSorted(seen) {
		t.Errorf("ids not increasing: %v", seen)
	}
	if n := e.count(t, `SELECT count(*) FROM install_events_out`); n != len(seen) {
		t.Errorf("table holds %d events, reader saw %d", n, len(seen))
	}
}

func TestEventIDFormat(t *testing.T) {
	t.Parallel()
	a, b := store.FormatEventID(9), store.FormatEventID(10)
	if !(a < b) {
		t.Errorf("%q does not sort before %q", a, b)
	}
	for _, id := range []int64{1, 9, 10, 1 << 62} {
		got, err := store.ParseEventID(store.FormatEventID(id))
		if err != nil || got != id {
			t.Errorf("ParseEventID(FormatEventID(%d)) = %d, %v", id, got, err)
		}
	}
	for _, bad := range []string{"x", "evt_1", "evt_-000000000000000001", "evt_9999999999999999999", "evt_00000000000000000a1"} {
		if _, err := store.ParseEventID(bad); err == nil {
			t.Errorf("ParseEventID(%q) accepted", bad)
		}
	}
}
