package store_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// KeyIDs lists the same key ids as KeyIDCounts, installs (through the
// index), API users' credentials and their tokens alike, and an uninstalled
// row (no ciphertext) adds none.
func TestKeyIDsMatchesKeyIDCounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // primary k1
	ids := func(s *store.Store) []string {
		t.Helper()
		got, err := s.KeyIDs(testkit.Context(t))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := ids(e.store); len(got) != 0 {
		t.Errorf("KeyIDs on an empty database = %v", got)
	}
	e.apply(t, installed(account, "cid-a", "secret-a", t0), store.OutcomeInstalled)
	rotated := store.New(e.pool, testkit.Keyring(t, "k2:"+testkit.Key(2)+",k1:"+testkit.Key(1)), store.WithClock(e.clock.Now))
	third := "6f1c0e9a-1b2c-4d3e-8f40-000000000003"
	if _, err := rotated.ApplyInstallEvent(testkit.Context(t), uninstalled(third, t0)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"k1"}, ids(rotated)); diff != "" {
		t.Errorf("KeyIDs, installs only (-want +got):\n%s", diff)
	}
	// API users: credentials and tokens under k3.
	third3 := store.New(e.pool, testkit.Keyring(t, "k3:"+testkit.Key(3)+",k2:"+testkit.Key(2)+",k1:"+testkit.Key(1)), store.WithClock(e.clock.Now))
	if _, err := third3.CreateAPIUser(testkit.Context(t), newUser("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := third3.UpdateAPIUserLocked(testkit.Context(t), "one", func(store.APIUserState) (store.APIUserUpdate, error) {
		return store.APIUserUpdate{Tokens: &store.APIUserTokens{AccessToken: "at", RefreshToken: "rt", TokenType: "Bearer", ExpiresAt: t0.Add(time.Hour)}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	counts, err := e.store.KeyIDCounts(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	var fromCounts []string
	for id := range counts {
		fromCounts = append(fromCounts, id)
	}
	slices.Sort(fromCounts)
	if diff := cmp.Diff([]string{"k1", "k3"}, ids(e.store)); diff != "" {
		t.Errorf("KeyIDs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(fromCounts, ids(e.store)); diff != "" {
		t.Errorf("KeyIDs vs KeyIDCounts' ids (-counts +ids):\n%s", diff)
	}
}
