package trackunitsim

import (
	"fmt"
	"testing"
	"time"
)

// Expired access tokens are dropped, but not on every mint: the map stays
// within twice its live tokens (or minSweepAt), and a token stays valid
// until it expires whatever the sweeps do.
func TestExpiredAccessTokensAreSweptNowAndThen(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	s := newSim(Options{Now: func() time.Time { return now }, TokenTTL: time.Minute})
	mint := func(n int) (last string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i := range n {
			last = s.issueAccessLocked(fmt.Sprintf("subject-%d", i), []string{"asset.view"})
		}
		return last
	}
	mint(3 * minSweepAt)
	if got := len(s.access); got != 3*minSweepAt {
		t.Fatalf("%d live tokens kept, want all %d", got, 3*minSweepAt)
	}
	now = now.Add(2 * time.Minute) // every token so far has expired
	// The map doubles (to 4096) before the next sweep drops the 3072
	// expired tokens; the 2048 minted since are all kept.
	live := mint(2 * minSweepAt)
	if got := len(s.access); got != 2*minSweepAt {
		t.Fatalf("after the old tokens expired, %d kept; want the %d live ones", got, 2*minSweepAt)
	}
	if _, ok := s.TokenInfo(live); !ok {
		t.Fatal("a token minted after the sweep is not valid")
	}
}
