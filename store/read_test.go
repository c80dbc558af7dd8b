package store_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

func acct(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }

// seedInstalls creates installs in two apps with mixed statuses:
// app "@a/one": accounts 1..7, where 2 and 5 are uninstalled and 3 is
// credentials_rejected; app "@b/two": accounts 1..3, all installed.
func seedInstalls(t *testing.T, e *env) {
	t.Helper()
	for _, a := range []struct {
		app string
		n   int
	}{{"@b/two", 3}, {"@a/one", 7}} { // inserted out of order on purpose
		for i := a.n; i >= 1; i-- {
			ev := installed(acct(i), "cid", "secret", t0)
			ev.IrisAppID = a.app
			e.apply(t, ev, store.OutcomeInstalled)
		}
	}
	for _, i := range []int{2, 5} {
		ev := uninstalled(acct(i), t0.Add(time.Second))
		ev.IrisAppID = "@a/one"
		e.apply(t, ev, store.OutcomeUninstalled)
	}
	if err := e.store.MarkCredentialsRejected(testkit.Context(t), "@a/one", acct(3), 1, "invalid_client"); err != nil {
		t.Fatal(err)
	}
}

type listed struct {
	App, Account string
	Status       store.InstallStatus
}

func keys(ins []store.Install) []listed {
	out := []listed{}
	for _, in := range ins {
		out = append(out, listed{in.IrisAppID, in.AccountID, in.Status})
	}
	return out
}

func TestListInstallsFiltersAndOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	seedInstalls(t, e)
	const I, U, R = store.StatusInstalled, store.StatusUninstalled, store.StatusCredentialsRejected
	a, b := "@a/one", "@b/two"
	after := &store.InstallKey{IrisAppID: a, AccountID: acct(4)}
	tests := []struct {
		name   string
		filter store.ListFilter
		want   []listed
	}{
		{"all", store.ListFilter{}, []listed{
			{a, acct(1), I}, {a, acct(2), U}, {a, acct(3), R}, {a, acct(4), I}, {a, acct(5), U},
			{a, acct(6), I}, {a, acct(7), I}, {b, acct(1), I}, {b, acct(2), I}, {b, acct(3), I},
		}},
		{"by app", store.ListFilter{IrisAppID: b}, []listed{{b, acct(1), I}, {b, acct(2), I}, {b, acct(3), I}}},
		{"by status", store.ListFilter{Status: U}, []listed{{a, acct(2), U}, {a, acct(5), U}}},
		{"by app and status", store.ListFilter{IrisAppID: a, Status: I}, []listed{{a, acct(1), I}, {a, acct(4), I}, {a, acct(6), I}, {a, acct(7), I}}},
		{"after a key", store.ListFilter{After: after, Limit: 4}, []listed{{a, acct(5), U}, {a, acct(6), I}, {a, acct(7), I}, {b, acct(1), I}}},
		{"after a key, by status", store.ListFilter{After: after, Status: I}, []listed{{a, acct(6), I}, {a, acct(7), I}, {b, acct(1), I}, {b, acct(2), I}, {b, acct(3), I}}},
		{"after a key, by app", store.ListFilter{After: after, IrisAppID: a}, []listed{{a, acct(5), U}, {a, acct(6), I}, {a, acct(7), I}}},
		{"limit", store.ListFilter{Limit: 2}, []listed{{a, acct(1), I}, {a, acct(2), U}}},
		{"unknown app", store.ListFilter{IrisAppID: "@nobody/x"}, []listed{}},
		{"after the last", store.ListFilter{After: &store.InstallKey{IrisAppID: b, AccountID: acct(3)}}, []listed{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.store.ListInstalls(testkit.Context(t), tt.filter)
			if err != nil {
				t.Fatalf("ListInstalls: %v", err)
			}
			if diff := cmp.Diff(tt.want, keys(got)); diff != "" {
				t.Errorf("ListInstalls(%+v) (-want +got):\n%s", tt.filter, diff)
			}
		})
	}
	if _, err := e.store.ListInstalls(testkit.Context(t), store.ListFilter{Status: "deleted"}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("unknown status: error = %v, want ErrInvalid", err)
	}
	bad := &store.InstallKey{IrisAppID: a, AccountID: "x"}
	if _, err := e.store.ListInstalls(testkit.Context(t), store.ListFilter{After: bad}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("bad page start: error = %v, want ErrInvalid", err)
	}
}

// TestListInstallsKeysetWalk pages through every install, two at a time,
// and checks each appears exactly once, in order.
func TestListInstallsKeysetWalk(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	seedInstalls(t, e)
	all, err := e.store.ListInstalls(testkit.Context(t), store.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var walked []store.Install
	var after *store.InstallKey
	for page := 0; ; page++ {
		if page > 10 {
			t.Fatal("pagination does not end")
		}
		got, err := e.store.ListInstalls(testkit.Context(t), store.ListFilter{After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		walked = append(walked, got...)
		if len(got) < 2 {
			break
		}
		last := got[len(got)-1]
		after = &store.InstallKey{IrisAppID: last.IrisAppID, AccountID: last.AccountID}
	}
	if diff := cmp.Diff(all, walked); diff != "" {
		t.Errorf("walked pages differ from one big page (-want +got):\n%s", diff)
	}
	if len(all) != 10 {
		t.Errorf("%d installs, want 10", len(all))
	}
}

func TestListInstallsDefaultAndMaxLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Rows straight in SQL: 1,001 installs through the API would be slow.
	_, err := e.pool.Exec(testkit.Context(t), `INSERT INTO installs (iris_app_id, account_id, status, credentials_version, updated_at, last_event_at)
		SELECT '@bulk/app', gen_random_uuid(), $1, 1, now(), now() FROM generate_series(1, 1002)`, store.StatusUninstalled)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ limit, want int }{{0, 50}, {-1, 50}, {7, 7}, {1001, 1001}, {5000, 1001}} {
		got, err := e.store.ListInstalls(testkit.Context(t), store.ListFilter{Limit: tt.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tt.want {
			t.Errorf("Limit %d: %d installs, want %d", tt.limit, len(got), tt.want)
		}
	}
}

func TestGetInstall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.clock.Advance(time.Hour)
	e.apply(t, installed(account, "cid", "s1", t0), store.OutcomeInstalled)
	for i := 1; i <= 4; i++ {
		ev := installed(account, "cid", "s1", t0.Add(time.Duration(i)*time.Second))
		ev.JTI = fmt.Sprint("jti-", i)
		e.apply(t, ev, store.OutcomeInstalled)
	}
	in, events, err := e.store.GetInstall(testkit.Context(t), app, account, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Install{
		IrisAppID: app, AccountID: account, Status: store.StatusInstalled,
		InstalledAt: t0, UpdatedAt: t0.Add(time.Hour), KeyID: "k1",
	}
	if diff := cmp.Diff(want, in, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("install (-want +got):\n%s", diff)
	}
	var jtis []string
	for _, ev := range events {
		jtis = append(jtis, ev.JTI)
	}
	if diff := cmp.Diff([]string{"jti-4", "jti-3", "jti-2"}, jtis); diff != "" {
		t.Errorf("latest events first (-want +got):\n%s", diff)
	}
	if events[0].ID <= events[1].ID {
		t.Errorf("event ids not descending: %d, %d", events[0].ID, events[1].ID)
	}
	if _, evs, _ := e.store.GetInstall(testkit.Context(t), app, account, 0); len(evs) != 0 {
		t.Errorf("GetInstall(events=0) returned %d events", len(evs))
	}
	for _, a := range []string{other, "not-a-uuid"} {
		if _, _, err := e.store.GetInstall(testkit.Context(t), app, a, 50); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetInstall(%q) error = %v, want ErrNotFound", a, err)
		}
	}
}

func TestRecordTokenResults(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply(t, installed(account, "cid", "s", t0), store.OutcomeInstalled)
	e.apply(t, installed(other, "cid", "s", t0), store.OutcomeInstalled)
	t1, t2, t3 := t0.Add(time.Minute), t0.Add(2*time.Minute), t0.Add(3*time.Minute)

	state := func(acct string) (lastToken *time.Time, lastErr string) {
		in, _, err := e.store.GetInstall(testkit.Context(t), app, acct, 0)
		if err != nil {
			t.Fatal(err)
		}
		return in.LastTokenAt, in.LastError
	}
	check := func(step, acct string, wantToken *time.Time, wantErr string) {
		t.Helper()
		gotToken, gotErr := state(acct)
		if (gotToken == nil) != (wantToken == nil) || (gotToken != nil && !gotToken.Equal(*wantToken)) || gotErr != wantErr {
			t.Errorf("%s: %s last_token_at %v last_error %q, want %v %q", step, acct, gotToken, gotErr, wantToken, wantErr)
		}
	}

	err := e.store.RecordTokenResults(testkit.Context(t), []store.TokenResult{
		{IrisAppID: app, AccountID: account, At: t1},
		{IrisAppID: app, AccountID: account, At: t2, LastError: "unavailable"}, // the latest wins the error
		{IrisAppID: app, AccountID: other, At: t2, LastError: "unavailable"},
		{IrisAppID: app, AccountID: other, At: t1},    // older success: token time, error stays
		{IrisAppID: app, AccountID: acct(99), At: t1}, // unknown install: dropped
		{IrisAppID: app, AccountID: "not-a-uuid", At: t1},
	})
	if err != nil {
		t.Fatal(err)
	}
	check("batch 1", account, &t1, "unavailable")
	check("batch 1", other, &t1, "unavailable")

	// A later success clears the error; an error alone keeps the token time.
	if err := e.store.RecordTokenResults(testkit.Context(t), []store.TokenResult{
		{IrisAppID: app, AccountID: account, At: t3},
		{IrisAppID: app, AccountID: other, At: t3, LastError: "invalid_scope"},
	}); err != nil {
		t.Fatal(err)
	}
	check("batch 2", account, &t3, "")
	check("batch 2", other, &t1, "invalid_scope")
	if err := e.store.RecordTokenResults(testkit.Context(t), nil); err != nil {
		t.Errorf("empty batch: %v", err)
	}
	// Token bookkeeping is not an install change.
	if in, _, _ := e.store.GetInstall(testkit.Context(t), app, account, 0); !in.UpdatedAt.Equal(t0) {
		t.Errorf("UpdatedAt moved to %v", in.UpdatedAt)
	}
}
