package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// API users' credentials and tokens move to the new primary like installs'
// and still open to the same values afterwards.
func TestReencryptAPIUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // primary k1
	e.createUser(t, newUser("one"))
	e.setTokens(t, "one", store.APIUserTokens{AccessToken: "at-one", RefreshToken: "rt-one", TokenType: "Bearer", ExpiresAt: t0.Add(time.Hour)})
	e.createUser(t, newUser("two")) // no tokens yet
	before := map[string]store.APIUserState{"one": e.lockedState(t, "one"), "two": e.lockedState(t, "two")}

	rotated := store.New(e.pool, testkit.Keyring(t, "k2:"+testkit.Key(2)+",k1:"+testkit.Key(1)), store.WithClock(e.clock.Now))
	res, err := rotated.Reencrypt(testkit.Context(t), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.ByKey["k1"]; got.Moved != 3 || got.Failed != 0 || got.Skipped != 0 {
		t.Errorf("k1 counts = %+v, want 3 groups moved (one's credentials and tokens, two's credentials)", got)
	}
	counts, err := rotated.KeyIDCounts(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int64{"k2": 3}, counts); diff != "" {
		t.Errorf("KeyIDCounts after reencrypt (-want +got):\n%s", diff)
	}
	after := &env{url: e.url, pool: e.pool, keys: e.keys, clock: e.clock, store: rotated}
	for name, want := range before {
		got := after.lockedState(t, name)
		if got.Password.Reveal() != want.Password.Reveal() || got.ClientSecret.Reveal() != want.ClientSecret.Reveal() ||
			got.ClientID.Reveal() != want.ClientID.Reveal() || got.RefreshToken.Reveal() != want.RefreshToken.Reveal() ||
			got.AccessToken.Reveal() != want.AccessToken.Reveal() {
			t.Errorf("%s opens to other values after reencrypt", name)
		}
	}
	again, err := rotated.Reencrypt(testkit.Context(t), 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tot := again.Total(); tot.Moved != 0 {
		t.Errorf("a second run moved %d", tot.Moved)
	}
}
