package token

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testkit"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/store"
)

func TestInvalidateDropsEveryScopeSetOfTheInstall(t *testing.T) {
	e := newEnv(t, nil)
	e.st.install(testApp, "acct-1", testSecret)
	e.st.install(testApp, "acct-2", testSecret)
	ctx := testkit.Context(t)
	reqs := []Request{req("acct-1", "asset.view"), req("acct-1", "account.view"), req("acct-2", "asset.view")}
	for _, r := range reqs {
		if _, err := e.b.Token(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	e.b.Invalidate(testApp, "acct-1")
	var got []string
	for _, r := range reqs {
		tok, err := e.b.Token(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, tok.AccessToken.Reveal())
	}
	want := []string{e.up.token(4), e.up.token(5), e.up.token(3)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tokens after Invalidate(acct-1) (-want +got):\n%s", diff)
	}

	e.b.InvalidateAll()
	if n := e.b.cache.len(); n != 0 {
		t.Errorf("cache holds %d entries after InvalidateAll", n)
	}
	if _, err := e.b.Token(ctx, reqs[2]); err != nil {
		t.Fatal(err)
	}
	if got := e.up.calls(); got != 6 {
		t.Errorf("upstream calls = %d, want 6", got)
	}
}

func TestInvalidateWinsOverFetchInFlight(t *testing.T) {
	tests := []struct {
		name       string
		change     func(st *fakeStore)
		invalidate func(b *Broker)
		wantErr    error
		wantSeen   []string // client secrets sent upstream
	}{
		{"new credentials", func(st *fakeStore) { st.install(testApp, "acct-1", "new-secret") },
			func(b *Broker) { b.Invalidate(testApp, "acct-1") }, nil, []string{testSecret, "new-secret"}},
		{"uninstalled", func(st *fakeStore) { st.setStatus(testApp, "acct-1", store.StatusUninstalled) },
			func(b *Broker) { b.Invalidate(testApp, "acct-1") }, ErrUninstalled, []string{testSecret}},
		{"InvalidateAll", func(st *fakeStore) { st.install(testApp, "acct-1", "new-secret") },
			func(b *Broker) { b.InvalidateAll() }, nil, []string{testSecret, "new-secret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.st.install(testApp, "acct-1", testSecret)
			ctx := testkit.Context(t)
			e.up.hold()
			type result struct {
				tok Token
				err error
			}
			done := make(chan result, 1)
			go func() {
				tok, err := e.b.Token(ctx, req("acct-1"))
				done <- result{tok, err}
			}()
			e.up.waitReceived(t) // minted with the old credentials, not yet answered
			tt.change(e.st)
			tt.invalidate(e.b)
			e.up.open()
			res := <-done
			if !errors.Is(res.err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", res.err, tt.wantErr)
			}
			var secrets []string
			for _, s := range e.up.getSeen() {
				secrets = append(secrets, s.ClientSecret)
			}
			if diff := cmp.Diff(tt.wantSeen, secrets); diff != "" {
				t.Errorf("secrets sent upstream (-want +got):\n%s", diff)
			}
			if tt.wantErr != nil {
				if n := e.b.cache.len(); n != 0 {
					t.Errorf("cache holds %d entries, want 0: the stale token was cached", n)
				}
				return
			}
			if got := res.tok.AccessToken.Reveal(); got != e.up.token(2) {
				t.Errorf("token = %s, want %s (the stale %s must not be handed out)", got, e.up.token(2), e.up.token(1))
			}
			tok, err := e.b.Token(ctx, req("acct-1"))
			if err != nil || tok.AccessToken.Reveal() != e.up.token(2) {
				t.Errorf("cached afterwards: %v %v, want %s", tok.AccessToken.Reveal(), err, e.up.token(2))
			}
		})
	}
}

func TestCacheBoundEvictsExpiredFirstThenOldest(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxEntries = 3 })
	for _, a := range []string{"a", "b", "c", "d", "e"} {
		e.st.install(testApp, a, testSecret)
	}
	ctx := testkit.Context(t)
	mint := func(acct string) {
		t.Helper()
		if _, err := e.b.Token(ctx, req(acct)); err != nil {
			t.Fatal(err)
		}
	}
	e.up.setLifetime(60)
	mint("a") // expires first
	e.up.setLifetime(3600)
	mint("b")
	e.clock.Advance(time.Minute)
	mint("c")
	e.clock.Advance(time.Minute) // a has expired
	mint("d")                    // evicts a, the expired one
	if diff := cmp.Diff([]string{"b", "c", "d"}, cachedAccounts(e.b)); diff != "" {
		t.Errorf("after d (-want +got):\n%s", diff)
	}
	mint("e") // nothing expired: evicts b, the oldest
	if diff := cmp.Diff([]string{"c", "d", "e"}, cachedAccounts(e.b)); diff != "" {
		t.Errorf("after e (-want +got):\n%s", diff)
	}
	calls := e.up.calls()
	mint("c")
	if got := e.up.calls(); got != calls {
		t.Errorf("c was not served from the cache")
	}
	mint("b")
	if got := e.up.calls(); got != calls+1 {
		t.Errorf("evicted b was not fetched again")
	}
}

func cachedAccounts(b *Broker) []string {
	b.cache.mu.RLock()
	defer b.cache.mu.RUnlock()
	var out []string
	for _, e := range b.cache.heap {
		out = append(out, e.account())
	}
	if len(out) != len(b.cache.entries) {
		panic("heap and map disagree")
	}
	slices.Sort(out)
	return out
}

func TestCacheStaleness(t *testing.T) {
	c := newCache(10)
	put := func(install string, start uint64) bool {
		e := &entry{key: install + "\x00s", installLen: int32(len(install)), tok: Token{ExpiresAt: epoch.Add(time.Hour)}}
		return c.put(e, start, epoch)
	}
	s0 := c.currentEpoch()
	c.invalidate("x")
	if put("x", s0) {
		t.Error("a fetch started before Invalidate(x) was cached")
	}
	if !put("y", s0) {
		t.Error("a fetch for another install was refused")
	}
	s1 := c.currentEpoch()
	if !put("x", s1) {
		t.Error("a fetch started after Invalidate(x) was refused")
	}

	// Past maxInvalidated the per-install epochs are pruned: older fetches
	// turn stale (conservative), newer ones stay current.
	s2 := c.currentEpoch()
	for i := range maxInvalidated + 5 {
		c.invalidate(fmt.Sprintf("other-%d", i))
	}
	if n := len(c.invalidated); n > maxInvalidated {
		t.Errorf("invalidated holds %d installs, want at most %d", n, maxInvalidated)
	}
	if put("z", s2) {
		t.Error("a fetch older than the prune was cached")
	}
	s3 := c.currentEpoch()
	c.invalidate("other-1")
	if !put("z", s3) {
		t.Error("a fetch newer than the prune was refused")
	}
	c.invalidateAll()
	if put("z", s3) || c.len() != 0 {
		t.Error("InvalidateAll did not win over an older fetch")
	}
}

// TestCacheInstallLists covers the list of each install's entries through
// removals of its head, of a later entry and of the whole install.
func TestCacheInstallLists(t *testing.T) {
	c := newCache(10)
	put := func(app, account, scopes string) *entry {
		install := app + "\x00" + account
		e := newEntryFor(fetchReq{key: install + "\x00" + scopes, install: install, app: app, account: account})
		e.tok = Token{ExpiresAt: epoch.Add(time.Hour)}
		if !c.put(e, c.currentEpoch(), epoch) {
			t.Fatalf("%s %s was not cached", install, scopes)
		}
		return e
	}
	listed := func(install string) []string {
		c.mu.RLock()
		defer c.mu.RUnlock()
		var out []string
		for e := c.byInstall[install]; e != nil; e = e.next {
			if e.next != nil && e.next.prev != e {
				t.Errorf("%q: broken back link", e.key)
			}
			out = append(out, e.key[len(install)+1:])
		}
		slices.Sort(out)
		return out
	}
	a := put("app", "x", "a")
	put("app", "x", "b")
	put("app", "x", "c")
	put("app", "y", "a")
	if got := []string{a.app(), a.account(), a.install(), fmt.Sprint(a.scopes())}; !slices.Equal(got, []string{"app", "x", "app\x00x", "[a]"}) {
		t.Errorf("entry parts = %q", got)
	}

	c.drop("app\x00x\x00a") // the head
	if diff := cmp.Diff([]string{"b", "c"}, listed("app\x00x")); diff != "" {
		t.Errorf("after dropping the head (-want +got):\n%s", diff)
	}
	if c.peek("app\x00x\x00a") != nil || a.prev != nil || a.next != nil {
		t.Error("the dropped head is still linked or cached")
	}
	c.drop("app\x00x\x00c")
	if diff := cmp.Diff([]string{"b"}, listed("app\x00x")); diff != "" {
		t.Errorf("after dropping c (-want +got):\n%s", diff)
	}
	put("app", "x", "d")
	c.invalidate("app\x00x")
	if got := listed("app\x00x"); got != nil || c.len() != 1 {
		t.Errorf("after Invalidate: x lists %q, cache holds %d entries, want only y's", got, c.len())
	}
	if diff := cmp.Diff([]string{"a"}, listed("app\x00y")); diff != "" {
		t.Errorf("y after x's Invalidate (-want +got):\n%s", diff)
	}
	if n := len(c.byInstall); n != 1 {
		t.Errorf("byInstall holds %d installs, want 1", n)
	}
}

// TestCacheInternsScopeSets: entries granted the same scopes, in the same
// order, share one slice; another order is another set; past maxScopeSets
// entries keep their own and the table stays bounded.
func TestCacheInternsScopeSets(t *testing.T) {
	c := newCache(2 * maxScopeSets)
	put := func(account string, scopes ...string) []string {
		install := "app\x00" + account
		e := newEntryFor(fetchReq{key: install + "\x00", install: install, app: "app", account: account})
		e.tok = Token{ExpiresAt: epoch.Add(time.Hour), Scopes: scopes}
		if !c.put(e, c.currentEpoch(), epoch) {
			t.Fatalf("%s was not cached", account)
		}
		return c.peek(e.key).tok.Scopes
	}
	a := put("a", "asset.view", "account.view")
	b := put("b", "asset.view", "account.view")
	if &a[0] != &b[0] {
		t.Error("equal scope sets were not shared")
	}
	if r := put("r", "account.view", "asset.view"); &r[0] == &a[0] || !slices.Equal(r, []string{"account.view", "asset.view"}) {
		t.Errorf("another order was served as %q from the first set", r)
	}
	for i := range maxScopeSets {
		put(fmt.Sprintf("n%d", i), fmt.Sprintf("s%d", i))
	}
	x := put("x1", "extra")
	y := put("x2", "extra")
	if &x[0] == &y[0] || !slices.Equal(y, []string{"extra"}) {
		t.Errorf("a set past the bound was interned or changed: %q", y)
	}
	if n := len(c.scopeSets); n != maxScopeSets {
		t.Errorf("scopeSets holds %d sets, want %d", n, maxScopeSets)
	}
}
