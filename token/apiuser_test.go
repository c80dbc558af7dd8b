package token

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testkit"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// Three replicas, 300 concurrent callers, one expired token: exactly one
// refresh reaches Trackunit, no spent refresh token is ever presented, and
// every caller gets the one new token. Restarted replicas (empty memory)
// keep using the stored refresh token.
func TestAPIUserOneRefreshAcrossReplicas(t *testing.T) {
	t.Parallel()
	e := newUserEnv(t, trackunitsim.Options{})
	u := e.register("fleet-reports")
	replicas := []*APIUserTokens{e.replica(nil), e.replica(nil), e.replica(nil)}
	first := e.token(replicas[0], u.name)

	concurrent := func(replicas []*APIUserTokens, n int) map[string]int {
		t.Helper()
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			seen = map[string]int{}
		)
		ctx := testkit.Context(t)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok, err := replicas[i%len(replicas)].Token(ctx, u.name, 0)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					seen["error: "+err.Error()]++
					return
				}
				e.noteToken(tok.AccessToken.Reveal())
				seen[tok.AccessToken.Reveal()]++
			}()
		}
		wg.Wait()
		return seen
	}
	checkOne := func(what string, seen map[string]int, n int, notTok string) string {
		t.Helper()
		if len(seen) != 1 {
			counts := []string{}
			for k, c := range seen {
				if !strings.HasPrefix(k, "error: ") {
					k = "a token" // not printed
				}
				counts = append(counts, fmt.Sprintf("%s: %d", k, c))
			}
			t.Fatalf("%s: callers got %d different answers (%v callers each), want one token for all", what, len(seen), counts)
		}
		for tok, count := range seen {
			if count != n || tok == notTok || !e.sim.ValidAccessToken(tok) {
				t.Fatalf("%s: %d callers got a token (fresh: %v, valid: %v)", what, count, tok != notTok, e.sim.ValidAccessToken(tok))
			}
			return tok
		}
		return ""
	}

	e.clock.Advance(2 * time.Hour) // the token has expired
	second := checkOne("300 callers", concurrent(replicas, 300), 300, first)
	if pw, rt := e.calls(u); pw != 1 || rt != 1 {
		t.Errorf("after 300 callers: %d password and %d refresh grants, want 1 and 1", pw, rt)
	}
	if n := e.sim.SpentRefreshReuse(); n != 0 {
		t.Errorf("%d spent refresh tokens were presented again", n)
	}

	// Restart: new replicas serve the token cached in the database without
	// calling Trackunit, then refresh with the stored refresh token.
	restarted := []*APIUserTokens{e.replica(nil), e.replica(nil), e.replica(nil)}
	if got := checkOne("after restart", concurrent(restarted, 30), 30, first); got != second {
		t.Error("restarted replicas did not serve the token cached in the database")
	}
	if pw, rt := e.calls(u); pw != 1 || rt != 1 {
		t.Errorf("restarted replicas with a valid cached token called Trackunit: %d password, %d refresh grants", pw, rt)
	}
	e.clock.Advance(2 * time.Hour)
	checkOne("restarted, expired", concurrent(restarted, 90), 90, second)
	if pw, rt := e.calls(u); pw != 1 || rt != 2 {
		t.Errorf("after restart and expiry: %d password and %d refresh grants, want 1 and 2", pw, rt)
	}
	if n := e.sim.SpentRefreshReuse(); n != 0 {
		t.Errorf("%d spent refresh tokens were presented again", n)
	}
}

// A replica that dies after Trackunit rotated the refresh token but before
// the commit loses the new refresh token. The user is not locked out: the
// stored one still works within the server's grace window, and without one
// the password grant starts a new chain. The user is never marked rejected.
func TestAPIUserCrashBeforeCommitRecovers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		grace        time.Duration
		wantPassword int // password grants in all, the first token's included
	}{
		{"grace window", time.Minute, 1},
		{"strict rotation", 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newUserEnv(t, trackunitsim.Options{RefreshGrace: tc.grace})
			u := e.register("crashy")
			var crash atomic.Bool
			dying := e.replica(nil)
			dying.b.afterUpstream = func() error {
				if crash.CompareAndSwap(true, false) {
					return errors.New("killed before commit")
				}
				return nil
			}
			e.token(dying, u.name)
			stored := e.refreshToken(u.name)

			e.clock.Advance(2 * time.Hour)
			crash.Store(true)
			if _, err := dying.Token(testkit.Context(t), u.name, 0); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Token through a crash before commit: %v, want ErrUnavailable", err)
			}
			if got := e.refreshToken(u.name); got != stored {
				t.Fatal("the aborted refresh changed the stored refresh token")
			}

			// The dead replica's lease runs out (FetchTimeout plus 1 s,
			// within the grace window);
			// then anyone may refresh.
			e.clock.Advance(30 * time.Second)
			restarted := e.replica(nil)
			e.token(restarted, u.name)
			if pw, _ := e.calls(u); pw != tc.wantPassword {
				t.Errorf("password grants = %d, want %d", pw, tc.wantPassword)
			}
			if got := e.listed(u.name); got.Status != store.APIUserActive {
				t.Errorf("status after recovery = %q (last error %q), want active", got.Status, got.LastError)
			}
			// The chain the recovery committed goes on.
			_, refreshesBefore := e.calls(u)
			e.clock.Advance(2 * time.Hour)
			e.token(dying, u.name)
			if pw, rt := e.calls(u); pw != tc.wantPassword || rt != refreshesBefore+1 {
				t.Errorf("next expiry: %d password, %d refresh grants; want %d and %d", pw, rt, tc.wantPassword, refreshesBefore+1)
			}
		})
	}
}

// A connection lost after Trackunit answered a refresh is retried once at
// once with the same refresh token, then the password grant is used.
func TestAPIUserRefreshAnswerLost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                      string
		grace                     time.Duration
		lose                      int
		wantPassword, wantRefresh int // after the first token's password grant
		wantReuse                 int
	}{
		{"retry within grace", time.Minute, 1, 0, 2, 0},
		{"strict server: password grant", 0, 1, 1, 2, 1},
		{"lost twice: password grant", time.Minute, 2, 1, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newUserEnv(t, trackunitsim.Options{RefreshGrace: tc.grace})
			u := e.register("flaky-net")
			b := e.replica(nil)
			e.token(b, u.name)

			e.clock.Advance(2 * time.Hour)
			// The next refresh grants are answered, then their answers lost.
			e.sim.InjectFault(trackunitsim.EndpointToken, trackunitsim.Fault{DropAnswer: true, Times: tc.lose})
			e.token(b, u.name)
			pw, rt := e.calls(u)
			got := []int{pw - 1, rt, e.sim.SpentRefreshReuse()}
			if diff := cmp.Diff([]int{tc.wantPassword, tc.wantRefresh, tc.wantReuse}, got); diff != "" {
				t.Errorf("[password, refresh, reuse] (-want +got):\n%s", diff)
			}
			if len(e.sleeps.get()) != 0 {
				t.Errorf("the retry after a lost answer waited %v, want at once", e.sleeps.get())
			}
			if st := e.listed(u.name).Status; st != store.APIUserActive {
				t.Errorf("status = %q, want active", st)
			}
		})
	}
}

// A valid token is served from memory, then from the database, without
// upstream traffic; minValid forces a refresh; a token inside the refresh
// margin is served while one background refresh runs.
func TestAPIUserServingAndRefreshAhead(t *testing.T) {
	t.Parallel()
	e := newUserEnv(t, trackunitsim.Options{})
	u := e.register("dashboards")
	a, b := e.replica(nil), e.replica(nil)
	tok := e.token(a, u.name)
	if again := e.token(a, u.name); again != tok {
		t.Error("a second call on the same replica got another token")
	}
	if other := e.token(b, u.name); other != tok {
		t.Error("another replica did not serve the token cached in the database")
	}
	if pw, rt := e.calls(u); pw != 1 || rt != 0 {
		t.Fatalf("%d password and %d refresh grants for one token, want 1 and 0", pw, rt)
	}

	e.clock.Advance(40 * time.Minute) // 20 minutes left
	if got := e.token(a, u.name); got != tok {
		t.Error("a token with 20 minutes left was not served to a caller without minValid")
	}
	long, err := a.Token(testkit.Context(t), u.name, 30*time.Minute)
	if err != nil || long.AccessToken.Reveal() == tok || long.ExpiresAt.Sub(e.clock.Now()) < 59*time.Minute {
		t.Fatalf("minValid 30m with 20m left: %v (new token: %v, expires %v)", err, long.AccessToken.Reveal() != tok, long.ExpiresAt)
	}
	e.noteToken(long.AccessToken.Reveal())
	if _, rt := e.calls(u); rt != 1 {
		t.Errorf("refresh grants = %d, want 1", rt)
	}

	e.clock.Advance(57 * time.Minute) // 3 minutes left: inside the 5 minute margin
	current := long.AccessToken.Reveal()
	if got := e.token(b, u.name); got != current {
		t.Error("a token inside the refresh margin was not served while it is renewed")
	}
	b.b.bg.Wait()
	if _, rt := e.calls(u); rt != 2 {
		t.Errorf("refresh grants after refresh-ahead = %d, want 2", rt)
	}
	e.clock.Advance(2 * time.Second) // past Revalidate: a reads the database
	for _, r := range []*APIUserTokens{a, b} {
		if got := e.token(r, u.name); got == current {
			t.Error("the refreshed-ahead token was not picked up")
		}
	}
	if _, rt := e.calls(u); rt != 2 {
		t.Errorf("refresh grants = %d, want still 2", rt)
	}
}

// Deleting or replacing a user reaches the replica that deleted it at once
// (Invalidate) and every other within Revalidate.
func TestAPIUserDeleteAndReplace(t *testing.T) {
	t.Parallel()
	e := newUserEnv(t, trackunitsim.Options{})
	u := e.register("short-lived")
	a, b := e.replica(nil), e.replica(nil)
	tok := e.token(a, u.name)
	e.token(b, u.name)

	e.save(u) // replaced: the tokens of the old registration are discarded
	a.Invalidate(u.name)
	if got := e.token(a, u.name); got == tok {
		t.Error("the replica that replaced the user served the old registration's token")
	}
	e.clock.Advance(time.Second)
	if got := e.token(b, u.name); got == tok {
		t.Error("another replica served the old registration's token after Revalidate")
	}

	if err := e.admin.DeleteAPIUser(testkit.Context(t), u.name); err != nil {
		t.Fatal(err)
	}
	a.Invalidate(u.name)
	for _, r := range []*APIUserTokens{a, b} {
		e.clock.Advance(time.Second)
		if _, err := r.Token(testkit.Context(t), u.name, 0); !errors.Is(err, ErrAPIUserNotFound) {
			t.Errorf("Token for a deleted user: %v, want ErrAPIUserNotFound", err)
		}
	}
	for _, name := range []string{"never-registered", "", "no spaces", "\x00"} {
		if _, err := a.Token(testkit.Context(t), name, 0); !errors.Is(err, ErrAPIUserNotFound) {
			t.Errorf("Token(%q): %v, want ErrAPIUserNotFound", name, err)
		}
	}
}

// A refresh margin longer than half the tokens' life is cut to half of it,
// so it cannot make every call refresh.
func TestAPIUserMarginLongerThanTokens(t *testing.T) {
	t.Parallel()
	e := newUserEnv(t, trackunitsim.Options{})
	u := e.register("long-margin")
	b := e.replica(func(c *Config) { c.RefreshMargin = 2 * time.Hour })
	tok := e.token(b, u.name)
	for range 5 {
		e.clock.Advance(time.Second)
		if got := e.token(b, u.name); got != tok {
			t.Fatal("a fresh token was replaced")
		}
		b.b.bg.Wait()
	}
	if pw, rt := e.calls(u); pw != 1 || rt != 0 {
		t.Fatalf("%d password and %d refresh grants for fresh tokens, want 1 and 0", pw, rt)
	}
	e.clock.Advance(31 * time.Minute) // under half the hour left
	e.token(b, u.name)
	b.b.bg.Wait()
	for range 5 {
		e.clock.Advance(time.Second)
		e.token(b, u.name)
		b.b.bg.Wait()
	}
	if pw, rt := e.calls(u); pw != 1 || rt != 1 {
		t.Errorf("%d password and %d refresh grants, want 1 and 1", pw, rt)
	}
}

// Callers that reach a replica together once Revalidate has passed all wait
// for its one read of the row: none is served the token another replica has
// since replaced.
func TestAPIUserRevalidationServesNoCallerTheReplacedToken(t *testing.T) {
	t.Parallel()
	e := newUserEnv(t, trackunitsim.Options{})
	u := e.register("together")
	a, b := e.replica(nil), e.replica(nil)
	old := e.token(a, u.name)
	if got := e.token(b, u.name); got != old {
		t.Fatal("the second replica did not serve the stored token")
	}
	e.clock.Advance(30 * time.Minute)
	fresh, err := a.Token(testkit.Context(t), u.name, 45*time.Minute) // a refreshes; b still holds old
	if err != nil || fresh.AccessToken.Reveal() == old {
		t.Fatalf("forced refresh on a: %v", err)
	}
	e.noteToken(fresh.AccessToken.Reveal())

	e.clock.Advance(time.Second) // past Revalidate
	var wg sync.WaitGroup
	var stale, failed atomic.Int32
	for range 50 {
		wg.Go(func() {
			tok, err := b.Token(testkit.Context(t), u.name, 0)
			switch {
			case err != nil:
				failed.Add(1)
			case tok.AccessToken != fresh.AccessToken:
				stale.Add(1)
			}
		})
	}
	wg.Wait()
	if stale.Load() != 0 || failed.Load() != 0 {
		t.Errorf("of 50 callers after Revalidate, %d got the replaced token and %d failed", stale.Load(), failed.Load())
	}
	if pw, rt := e.calls(u); pw != 1 || rt != 1 {
		t.Errorf("%d password and %d refresh grants, want 1 and 1: b must take the token a stored", pw, rt)
	}
}
