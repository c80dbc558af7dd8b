package store_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// pair is one install's client id and secret in plain text.
type pair struct{ ID, Secret string }

// rotationKeys are the keyrings before ("A") and after ("B,A") a rotation.
func rotationKeys(t *testing.T) (before, after *crypto.Keyring) {
	return testkit.Keyring(t, "A:"+testkit.Key(10)), testkit.Keyring(t, "B:"+testkit.Key(11)+",A:"+testkit.Key(10))
}

// installLoc is where an installs credential column lives, as the store
// binds it in the associated data.
func installLoc(acct, column string) crypto.Location {
	return crypto.Location{Table: "installs", Row: app + "/" + acct, Column: column}
}

// bulkInstall writes installed rows sealed under keys with COPY: 10,000
// installs this way take a fraction of a second, where ApplyInstallEvent
// would take many seconds on two cores.
func bulkInstall(t *testing.T, pool *pgxpool.Pool, keys *crypto.Keyring, installs map[string]pair) {
	t.Helper()
	rows := make([][]any, 0, len(installs))
	for acct, p := range installs {
		keyID, idEnc, err := keys.Seal([]byte(p.ID), installLoc(acct, "client_id"))
		if err != nil {
			t.Fatal(err)
		}
		_, secretEnc, err := keys.Seal([]byte(p.Secret), installLoc(acct, "client_secret"))
		if err != nil {
			t.Fatal(err)
		}
		u := pgtype.UUID{Bytes: uuid.MustParse(acct), Valid: true}
		rows = append(rows, []any{app, u, "installed", keyID, idEnc, secretEnc, int64(1), t0, t0, t0})
	}
	n, err := pool.CopyFrom(testkit.Context(t), pgx.Identifier{"installs"},
		[]string{"iris_app_id", "account_id", "status", "key_id", "client_id_enc", "client_secret_enc",
			"credentials_version", "installed_at", "updated_at", "last_event_at"},
		pgx.CopyFromRows(rows))
	if err != nil || n != int64(len(rows)) {
		t.Fatalf("COPY installs: %d rows, %v", n, err)
	}
}

// storedRow is one installs row read behind the store's back.
type storedRow struct {
	Account, KeyID   string
	IDEnc, SecretEnc []byte
	Version          int64
}

func readRows(t *testing.T, pool *pgxpool.Pool) []storedRow {
	t.Helper()
	rows, _ := pool.Query(testkit.Context(t), `SELECT account_id::text, key_id, client_id_enc, client_secret_enc, credentials_version
		FROM installs WHERE key_id IS NOT NULL ORDER BY account_id`)
	var out []storedRow
	var r storedRow
	_, err := pgx.ForEachRow(rows, []any{&r.Account, &r.KeyID, &r.IDEnc, &r.SecretEnc, &r.Version}, func() error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// openAll decrypts every stored credential with keys, failing the test on
// any row that does not open.
func openAll(t *testing.T, pool *pgxpool.Pool, keys *crypto.Keyring) (map[string]pair, map[string]int) {
	t.Helper()
	got := make(map[string]pair)
	byKey := make(map[string]int)
	for _, r := range readRows(t, pool) {
		id, err1 := keys.Open(r.KeyID, r.IDEnc, installLoc(r.Account, "client_id"))
		secret, err2 := keys.Open(r.KeyID, r.SecretEnc, installLoc(r.Account, "client_secret"))
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("install %s under %s does not open: %v", r.Account, r.KeyID, err)
		}
		got[r.Account] = pair{string(id), string(secret)}
		byKey[r.KeyID]++
	}
	return got, byKey
}

// writers deliver INSTALLED events through a store, replacing the
// credentials of existing installs and creating new ones, until stopped.
type writers struct {
	mu       sync.Mutex
	latest   map[string]pair          // what each install must hold once all is done
	seen     map[string]map[pair]bool // every value ever sent per install
	replaced atomic.Int64             // applied replacements of existing installs
	warm     chan struct{}            // closed after the first 100 applied events
	stop     chan struct{}
	wg       sync.WaitGroup
	errs     chan error
}

func startWriters(t *testing.T, st *store.Store, initial map[string]pair, existing, workers, maxEach int) *writers {
	w := &writers{latest: make(map[string]pair), seen: make(map[string]map[pair]bool),
		warm: make(chan struct{}), stop: make(chan struct{}), errs: make(chan error, workers)}
	for a, p := range initial {
		w.latest[a] = p
		w.seen[a] = map[pair]bool{p: true}
	}
	var applied atomic.Int64
	c := testkit.Context(t)
	for g := range workers {
		w.wg.Go(func() {
			// Worker g owns the accounts ≡ g mod workers, so its events for
			// one install are in order. It strides across the whole table,
			// touching rows both behind and ahead of Reencrypt's cursor.
			for k := range maxEach {
				select {
				case <-w.stop:
					return
				default:
				}
				var a string
				if k%3 == 2 {
					a = acct(existing + g + workers*k) // a new install
				} else {
					a = acct((k*389)%(existing/workers)*workers + g)
				}
				p := pair{fmt.Sprintf("cid-%d-%d", g, k), fmt.Sprintf("secret-%d-%d", g, k)}
				w.mu.Lock()
				if w.seen[a] == nil {
					w.seen[a] = make(map[pair]bool)
				}
				w.seen[a][p] = true
				w.mu.Unlock()
				ev := installed(a, p.ID, p.Secret, t0.Add(time.Hour+time.Duration(k)*time.Millisecond))
				if out, err := st.ApplyInstallEvent(c, ev); err != nil || out != store.OutcomeInstalled {
					w.errs <- fmt.Errorf("ApplyInstallEvent(%s) = %q, %v", a, out, err)
					return
				}
				w.mu.Lock()
				if _, existed := w.latest[a]; existed && k%3 != 2 {
					w.replaced.Add(1)
				}
				w.latest[a] = p
				w.mu.Unlock()
				if applied.Add(1) == 100 {
					close(w.warm)
				}
			}
		})
	}
	return w
}

// finish stops the writers and returns what every install must hold.
func (w *writers) finish(t *testing.T) map[string]pair {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	close(w.errs)
	for err := range w.errs {
		t.Error(err)
	}
	return w.latest
}

// TestReencryptRotation rotates 10,000 installs from key A to key B while
// installs keep arriving, stops the run midway, resumes it, and checks that
// every row ends under B holding its latest credentials.
func TestReencryptRotation(t *testing.T) {
	e := newEnv(t)
	c := testkit.Context(t)
	keysA, keysBA := rotationKeys(t)
	const n = 10000
	initial := make(map[string]pair, n)
	for i := range n {
		initial[acct(i)] = pair{fmt.Sprintf("cid-%d", i), fmt.Sprintf("secret-%d", i)}
	}
	bulkInstall(t, e.pool, keysA, initial)
	// The bulk path must be what the store itself writes.
	if got, err := store.New(e.pool, keysA).InstallCredentials(c, app, acct(4242)); err != nil ||
		got.ClientID.Reveal() != "cid-4242" || got.ClientSecret.Reveal() != "secret-4242" {
		t.Fatalf("bulk-written install does not read back: %v", err)
	}

	// The service, already redeployed with B as primary, keeps taking
	// installs during the whole rotation.
	service := store.New(e.pool, keysBA, store.WithClock(e.clock.Now))
	w := startWriters(t, service, initial, n, 4, 1000)
	t.Cleanup(func() {
		select {
		case <-w.stop:
		default:
			close(w.stop)
			w.wg.Wait()
		}
	})
	rotator := store.New(e.pool, keysBA)

	// Run 1 is interrupted after three batches, as Ctrl-C would.
	killed, kill := context.WithCancel(c)
	defer kill()
	res1, err := rotator.Reencrypt(killed, 500, func(p store.Progress) {
		if p.Batches == 1 {
			select { // make sure installs arrive while the rotation runs
			case <-w.warm:
			case <-c.Done():
			}
		}
		if p.Batches == 3 {
			kill()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: err = %v, want context.Canceled", err)
	}
	total1 := res1.Total()
	if res1.Batches != 3 || total1.Moved+total1.Skipped != 1500 || total1.Failed != 0 || total1.Moved == 0 {
		t.Errorf("interrupted run: %d batches, counts %+v; want 3 batches, 1500 rows moved or skipped, none failed", res1.Batches, total1)
	}
	if res1.Remaining != nil {
		t.Errorf("interrupted run reports Remaining %v, want nil", res1.Remaining)
	}
	// Nothing is broken midway: every row opens, to a value that was sent
	// for it, and at least the moved rows are under B.
	mid, byKey := openAll(t, e.pool, keysBA)
	w.mu.Lock()
	for a, p := range mid {
		if !w.seen[a][p] {
			t.Errorf("midway, install %s holds credentials never sent for it", a)
		}
	}
	w.mu.Unlock()
	if int64(byKey["B"]) < total1.Moved {
		t.Errorf("midway, %d rows under B, fewer than the %d moved", byKey["B"], total1.Moved)
	}

	// Run 2 resumes and completes while installs still arrive.
	res2, err := rotator.Reencrypt(c, 500, nil)
	if err != nil {
		t.Fatalf("resumed run: %v", err)
	}
	want := w.finish(t)
	if res2.Total().Failed != 0 || len(res2.Remaining) != 0 {
		t.Errorf("resumed run: counts %+v, remaining %v; want no failures and nothing remaining", res2.Total(), res2.Remaining)
	}
	for _, r := range []store.Result{res1, res2} {
		if diff := cmp.Diff([]string{"A"}, slices.Sorted(maps.Keys(r.ByKey))); diff != "" {
			t.Errorf("ByKey has key ids other than A (-want +got):\n%s", diff)
		}
	}
	if moved := total1.Moved + res2.Total().Moved + total1.Skipped + res2.Total().Skipped; moved > n {
		t.Errorf("%d rows moved or skipped in all, more than the %d under A", moved, n)
	}
	if w.replaced.Load() == 0 {
		t.Error("no credentials were replaced during the rotation; the test proves nothing")
	}
	t.Logf("run 1 %+v, run 2 %+v, %d replacements and %d new installs meanwhile",
		total1, res2.Total(), w.replaced.Load(), len(want)-n)

	got, byKey := openAll(t, e.pool, keysBA)
	if diff := cmp.Diff(map[string]int{"B": len(want)}, byKey); diff != "" {
		t.Errorf("rows by key id after the rotation (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("credentials after the rotation (-want +got):\n%s", diff)
	}

	// A second complete run finds nothing to do.
	res3, err := rotator.Reencrypt(c, 500, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(store.Result{Primary: "B", ByKey: map[string]store.KeyCounts{}, Remaining: map[string]int64{}}, res3); diff != "" {
		t.Errorf("second run (-want +got):\n%s", diff)
	}
}

// TestReencryptRowChangedMeanwhile makes a row change between Reencrypt's
// read and its write, deterministically: a transaction holds the row's lock
// until Reencrypt's update waits for it, then replaces the credentials and
// commits. The old credentials must never overwrite the new ones.
func TestReencryptRowChangedMeanwhile(t *testing.T) {
	tests := []struct {
		name     string
		writerID string // the key the concurrent change seals under
		want     store.KeyCounts
	}{
		// A replica already on the new keyring: the row is on the primary
		// now and there is nothing left to move.
		{"changed under the primary", "B", store.KeyCounts{Moved: 2, Skipped: 1}},
		// A replica still on the old keyring: the row is re-read and moved.
		{"changed under the old key", "A", store.KeyCounts{Moved: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			c := testkit.Context(t)
			keysA, keysBA := rotationKeys(t)
			writerKeys := keysBA
			if tt.writerID == "A" {
				writerKeys = keysA
			}
			old := store.New(e.pool, keysA)
			for i := range 3 {
				if _, err := old.ApplyInstallEvent(c, installed(acct(i), fmt.Sprint("cid-", i), fmt.Sprint("old-", i), t0)); err != nil {
					t.Fatal(err)
				}
			}
			before := e.raw(t, acct(0))

			tx, err := e.pool.Begin(c)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(c) }()
			if _, err := tx.Exec(c, `SELECT 1 FROM installs WHERE iris_app_id = $1 AND account_id = $2 FOR UPDATE`, app, acct(1)); err != nil {
				t.Fatal(err)
			}
			type outcome struct {
				res store.Result
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				res, err := store.New(e.pool, keysBA).Reencrypt(c, 10, nil)
				done <- outcome{res, err}
			}()
			waitForLockWait(t, e.pool, "UPDATE installs SET key_id")

			// What an INSTALLED with new credentials writes.
			keyID, idEnc, _ := writerKeys.Seal([]byte("cid-new"), installLoc(acct(1), "client_id"))
			_, secretEnc, _ := writerKeys.Seal([]byte("new-secret"), installLoc(acct(1), "client_secret"))
			if _, err := tx.Exec(c, `UPDATE installs SET key_id = $3, client_id_enc = $4, client_secret_enc = $5,
				credentials_version = credentials_version + 1 WHERE iris_app_id = $1 AND account_id = $2`,
				app, acct(1), keyID, idEnc, secretEnc); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(c); err != nil {
				t.Fatal(err)
			}
			var o outcome
			select {
			case o = <-done:
			case <-c.Done():
				t.Fatal("Reencrypt did not finish")
			}
			if o.err != nil {
				t.Fatal(o.err)
			}
			want := store.Result{Primary: "B", ByKey: map[string]store.KeyCounts{"A": tt.want}, Batches: 1, Remaining: map[string]int64{}}
			if diff := cmp.Diff(want, o.res); diff != "" {
				t.Errorf("Result (-want +got):\n%s", diff)
			}
			got, byKey := openAll(t, e.pool, keysBA)
			wantCreds := map[string]pair{
				acct(0): {"cid-0", "old-0"}, acct(1): {"cid-new", "new-secret"}, acct(2): {"cid-2", "old-2"},
			}
			if diff := cmp.Diff(wantCreds, got); diff != "" {
				t.Errorf("credentials (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]int{"B": 3}, byKey); diff != "" {
				t.Errorf("rows by key id (-want +got):\n%s", diff)
			}
			// Moving is not a change of credentials: a rejection seen with
			// this version must still mark them.
			after := e.raw(t, acct(0))
			if after.Version != before.Version {
				t.Errorf("credentials_version %d → %d; moving must not bump it", before.Version, after.Version)
			}
		})
	}
}

// waitForLockWait waits until a session of this database waits for a lock
// while running a statement starting with prefix.
func waitForLockWait(t *testing.T, pool *pgxpool.Pool, prefix string) {
	t.Helper()
	c := testkit.Context(t)
	testkit.WaitFor(t, "a session waiting for a lock in "+prefix, func() bool {
		var n int
		err := pool.QueryRow(c, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND starts_with(query, $1)`, prefix).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
}

// TestReencryptReportsUndecryptable: rows that do not open are counted by
// key id and listed, left untouched, and do not stop the run; uninstalled
// rows and rows already under the primary are not looked at.
func TestReencryptReportsUndecryptable(t *testing.T) {
	e := newEnv(t)
	c := testkit.Context(t)
	keysA, keysBA := rotationKeys(t)
	apply := func(keys *crypto.Keyring, ev store.InstallEvent) {
		t.Helper()
		if _, err := store.New(e.pool, keys).ApplyInstallEvent(c, ev); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 8 {
		apply(keysA, installed(acct(i), fmt.Sprint("cid-", i), fmt.Sprint("secret-", i), t0))
	}
	apply(testkit.Keyring(t, "Z:"+testkit.Key(12)), installed(acct(7), "cid-7", "secret-z", t0.Add(time.Second))) // a key id not in the keyring
	apply(keysA, installed(acct(8), "cid-8", "secret-8", t0))
	apply(keysA, uninstalled(acct(8), t0.Add(time.Second)))
	apply(keysBA, installed(acct(9), "cid-9", "secret-9", t0)) // already under the primary

	r5 := e.raw(t, acct(5))
	r5.ClientSecretEnc[len(r5.ClientSecretEnc)-1] ^= 1 // altered
	r0 := e.raw(t, acct(0))                            // and copied to another row
	for _, u := range []struct {
		acct    string
		id, sec []byte
	}{{acct(5), r5.ClientIDEnc, r5.ClientSecretEnc}, {acct(6), r0.ClientIDEnc, r0.ClientSecretEnc}} {
		if _, err := e.pool.Exec(c, `UPDATE installs SET client_id_enc = $3, client_secret_enc = $4
			WHERE iris_app_id = $1 AND account_id = $2`, app, u.acct, u.id, u.sec); err != nil {
			t.Fatal(err)
		}
	}
	brokenBefore := []rawRow{e.raw(t, acct(5)), e.raw(t, acct(6)), e.raw(t, acct(7))}

	var progress []store.Progress
	res, err := store.New(e.pool, keysBA).Reencrypt(c, 3, func(p store.Progress) { progress = append(progress, p) })
	if err != nil {
		t.Fatalf("Reencrypt: %v", err)
	}
	failures := []store.Failure{
		{Table: "installs", Row: app + "/" + acct(5), Column: "client_secret", KeyID: "A", Reason: "does not authenticate"},
		{Table: "installs", Row: app + "/" + acct(6), Column: "client_id", KeyID: "A", Reason: "does not authenticate"},
		{Table: "installs", Row: app + "/" + acct(7), Column: "client_id", KeyID: "Z", Reason: "unknown key id"},
	}
	want := store.Result{
		Primary:   "B",
		ByKey:     map[string]store.KeyCounts{"A": {Moved: 5, Failed: 2}, "Z": {Failed: 1}},
		Failures:  failures,
		Batches:   3, // rows 0-7 in batches of 3, 3 and 2
		Remaining: map[string]int64{"A": 2, "Z": 1},
	}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("Result (-want +got):\n%s", diff)
	}
	wantProgress := []store.Progress{
		{Table: "installs", Batches: 1, Rows: 3, Total: store.KeyCounts{Moved: 3}},
		{Table: "installs", Batches: 2, Rows: 6, Total: store.KeyCounts{Moved: 5, Failed: 1}},
		{Table: "installs", Batches: 3, Rows: 8, Total: store.KeyCounts{Moved: 5, Failed: 3}},
	}
	if diff := cmp.Diff(wantProgress, progress); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
	brokenAfter := []rawRow{e.raw(t, acct(5)), e.raw(t, acct(6)), e.raw(t, acct(7))}
	if diff := cmp.Diff(brokenBefore, brokenAfter); diff != "" {
		t.Errorf("rows that failed were changed (-before +after):\n%s", diff)
	}
	for _, i := range []int{0, 1, 2, 3, 4, 9} {
		if c := e.raw(t, acct(i)); c.KeyID == nil || *c.KeyID != "B" {
			t.Errorf("install %d is under %v after the run, want B", i, c.KeyID)
		}
	}

	// Running again changes nothing and reports the same failures.
	again, err := store.New(e.pool, keysBA).Reencrypt(c, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	want.ByKey = map[string]store.KeyCounts{"A": {Failed: 2}, "Z": {Failed: 1}}
	want.Batches = 1
	if diff := cmp.Diff(want, again); diff != "" {
		t.Errorf("second run (-want +got):\n%s", diff)
	}
}
