package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// LeaseAPIUser returns the stored token while it is valid past now+need,
// else leases the row to one owner at a time until the lease runs out; a
// commit checks the lease and the spent refresh token; a rejected user is
// never leased.
func TestAPIUserLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createUser(t, newUser("leased"))
	lease := func(owner string, need time.Duration) (store.APIUserState, store.LeaseState) {
		t.Helper()
		now := e.clock.Now()
		st, state, err := e.store.LeaseAPIUser(testkit.Context(t), "leased", owner, now, need, now.Add(20*time.Second))
		if err != nil {
			t.Fatalf("LeaseAPIUser(%s): %v", owner, err)
		}
		return st, state
	}
	var got []store.LeaseState
	a, s1 := lease("a", 0) // no token yet: a takes the lease
	_, s2 := lease("b", 0) // a holds it
	got = append(got, s1, s2)
	tokens := store.APIUserTokens{AccessToken: "at-1", RefreshToken: "rt-1", TokenType: "Bearer",
		Scopes: []string{"api"}, ExpiresAt: e.clock.Now().Add(time.Hour)}
	if _, ok, err := e.store.CommitAPIUserLease(testkit.Context(t), a, "b", store.APIUserUpdate{Tokens: &tokens}); err != nil || ok {
		t.Errorf("commit by a replica without the lease: ok %v, err %v; want refused", ok, err)
	}
	if v, ok, err := e.store.CommitAPIUserLease(testkit.Context(t), a, "a", store.APIUserUpdate{Tokens: &tokens}); err != nil || !ok || v.AccessToken != "at-1" {
		t.Fatalf("commit by the lease holder: ok %v, err %v", ok, err)
	}
	shared, s3 := lease("b", 30*time.Minute) // valid past need: shared, not leased
	_, s4 := lease("b", 2*time.Hour)         // not valid that long: b leases
	_, s5 := lease("c", 2*time.Hour)         // b holds it
	e.clock.Advance(21 * time.Second)
	c, s6 := lease("c", 2*time.Hour) // b's lease ran out: c takes over
	got = append(got, s3, s4, s5, s6)
	want := []store.LeaseState{store.LeaseTaken, store.LeaseBusy, store.TokenShared, store.LeaseTaken, store.LeaseBusy, store.LeaseTaken}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lease states (-want +got):\n%s", diff)
	}
	if shared.AccessToken != "at-1" || shared.RefreshToken != "rt-1" {
		t.Error("the shared state is not the committed token")
	}

	// The refresh token a stale lease read was spent meanwhile: no commit.
	next := store.APIUserTokens{AccessToken: "at-2", RefreshToken: "rt-2", TokenType: "Bearer",
		Scopes: []string{"api"}, ExpiresAt: e.clock.Now().Add(time.Hour)}
	e.setTokens(t, "leased", next)
	if _, ok, err := e.store.CommitAPIUserLease(testkit.Context(t), c, "c", store.APIUserUpdate{Tokens: &tokens}); err != nil || ok {
		t.Errorf("commit after the refresh token changed: ok %v, err %v; want refused", ok, err)
	}

	if err := e.store.ReleaseAPIUserLease(testkit.Context(t), "leased", "c"); err != nil {
		t.Fatal(err)
	}
	st, _ := lease("d", 2*time.Hour)
	if _, _, err := e.store.CommitAPIUserLease(testkit.Context(t), st, "d", store.APIUserUpdate{Reject: true, LastError: "invalid_grant"}); err != nil {
		t.Fatal(err)
	}
	if st, state := lease("e", 0); state != store.LeaseBusy || st.Status != store.APIUserCredentialsRejected {
		t.Errorf("rejected user: state %v, status %q; want busy and credentials_rejected", state, st.Status)
	}
	if _, _, err := e.store.LeaseAPIUser(testkit.Context(t), "nobody", "a", e.clock.Now(), 0, e.clock.Now()); !errors.Is(err, store.ErrAPIUserNotFound) {
		t.Errorf("LeaseAPIUser(unknown): %v, want ErrAPIUserNotFound", err)
	}
}
