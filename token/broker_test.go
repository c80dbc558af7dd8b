package token

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testkit"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/store"
)

func TestManyCallersOneColdKeyShareOneUpstreamCall(t *testing.T) {
	e := newEnv(t, nil)
	e.st.install(testApp, "acct-1", testSecret)
	ctx := testkit.Context(t)

	const callers = 500
	tokens := make([]string, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			tok, err := e.b.Token(ctx, req("acct-1", "asset.view", "account.view"))
			tokens[i], errs[i] = tok.AccessToken.Reveal(), err
		})
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || tokens[i] != e.up.token(1) {
			t.Fatalf("caller %d: token %q, err %v; want %q", i, tokens[i], errs[i], e.up.token(1))
		}
	}
	if got := e.up.calls(); got != 1 {
		t.Errorf("upstream calls = %d, want 1", got)
	}
	want := []seenRequest{{ClientID: clientIDFor("acct-1"), ClientSecret: testSecret, GrantType: "client_credentials",
		Scope: "account.view asset.view"}}
	if diff := cmp.Diff(want, e.up.getSeen()); diff != "" {
		t.Errorf("upstream request (-want +got):\n%s", diff)
	}
}

func TestManyAccountsOneUpstreamCallEach(t *testing.T) {
	e := newEnv(t, nil)
	const accounts, perAccount = 50, 10
	for a := range accounts {
		e.st.install(testApp, fmt.Sprintf("acct-%d", a), testSecret)
	}
	ctx := testkit.Context(t)
	var mu sync.Mutex
	byAccount := make(map[string]map[string]bool)
	var wg sync.WaitGroup
	for a := range accounts {
		for range perAccount {
			acct := fmt.Sprintf("acct-%d", a)
			wg.Go(func() {
				tok, err := e.b.Token(ctx, req(acct))
				if err != nil {
					t.Errorf("Token(%s): %v", acct, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if byAccount[acct] == nil {
					byAccount[acct] = make(map[string]bool)
				}
				byAccount[acct][tok.AccessToken.Reveal()] = true
			})
		}
	}
	wg.Wait()
	if got := e.up.calls(); got != accounts {
		t.Errorf("upstream calls = %d, want %d", got, accounts)
	}
	distinct := make(map[string]bool)
	for acct, toks := range byAccount {
		if len(toks) != 1 {
			t.Errorf("%s got %d different tokens, want 1", acct, len(toks))
		}
		for tok := range toks {
			distinct[tok] = true
		}
	}
	if len(distinct) != accounts {
		t.Errorf("%d distinct tokens across accounts, want %d", len(distinct), accounts)
	}
}

func TestScopeSetsAreNormalizedIntoOneKey(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DefaultScopes = []string{"b.view", "a.view"} })
	e.st.install(testApp, "acct-1", testSecret)
	ctx := testkit.Context(t)
	for _, scopes := range [][]string{{"a.view", "b.view"}, {"b.view", "a.view", "a.view"}, {"", "b.view", "a.view"}, nil, {}} {
		tok, err := e.b.Token(ctx, req("acct-1", scopes...))
		if err != nil {
			t.Fatalf("Token(%q): %v", scopes, err)
		}
		if diff := cmp.Diff([]string{"a.view", "b.view"}, tok.Scopes); diff != "" {
			t.Errorf("Token(%q) scopes (-want +got):\n%s", scopes, diff)
		}
	}
	if got := e.up.calls(); got != 1 {
		t.Errorf("upstream calls = %d, want 1", got)
	}
	if _, err := e.b.Token(ctx, req("acct-1", "c.view")); err != nil {
		t.Fatal(err)
	}
	if got := e.up.calls(); got != 2 {
		t.Errorf("upstream calls after another scope set = %d, want 2", got)
	}
}

func TestRequestValidation(t *testing.T) {
	noDefaults := newEnv(t, func(c *Config) { c.DefaultScopes = nil })
	noDefaults.st.install(testApp, "acct-1", testSecret)
	ctx := testkit.Context(t)
	tests := []struct {
		name string
		r    Request
		want error
	}{
		{"no scopes, no defaults", req("acct-1"), ErrNoScopes},
		{"only empty scopes", req("acct-1", ""), ErrNoScopes},
		{"scope with space", req("acct-1", "asset.view account.view"), ErrInvalidScope},
		{"scope with quote", req("acct-1", `a"b`), ErrInvalidScope},
		{"scope with control char", req("acct-1", "a\nb"), ErrInvalidScope},
		{"empty account", req("", "asset.view"), ErrNotFound},
		{"empty app", Request{AccountID: "acct-1", Scopes: []string{"asset.view"}}, ErrNotFound},
		{"NUL in account", req("acct\x00x", "asset.view"), ErrNotFound},
		{"unknown install", req("acct-2", "asset.view"), ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := noDefaults.b.Token(ctx, tt.r); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if got := noDefaults.up.calls(); got != 0 {
		t.Errorf("upstream calls = %d, want 0", got)
	}
}

func TestInstallStatus(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(st *fakeStore)
		want   error
		wantIs error
	}{
		{"not found", func(*fakeStore) {}, ErrNotFound, store.ErrNotFound},
		{"uninstalled", func(st *fakeStore) {
			st.install(testApp, "acct-1", testSecret)
			st.setStatus(testApp, "acct-1", store.StatusUninstalled)
		}, ErrUninstalled, ErrUninstalled},
		{"credentials rejected", func(st *fakeStore) {
			st.install(testApp, "acct-1", testSecret)
			st.setStatus(testApp, "acct-1", store.StatusCredentialsRejected)
		}, ErrCredentialsRejected, ErrCredentialsRejected},
		{"store down", func(st *fakeStore) { st.failWith = errors.New("connection refused") }, ErrUnavailable, ErrUnavailable},
		{"undecryptable", func(st *fakeStore) { st.failWith = fmt.Errorf("open: %w", store.ErrUndecryptable) }, ErrUnavailable, store.ErrUndecryptable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			tt.setup(e.st)
			_, err := e.b.Token(testkit.Context(t), req("acct-1"))
			if !errors.Is(err, tt.want) || !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want %v wrapping %v", err, tt.want, tt.wantIs)
			}
			if got := e.up.calls(); got != 0 {
				t.Errorf("upstream calls = %d, want 0", got)
			}
		})
	}
}

func TestCachedTokenReusedUntilRefreshWindow(t *testing.T) {
	e := newEnv(t, nil) // margin 5m; jitter 0.5 puts the refresh point at 330 s before expiry
	e.st.install(testApp, "acct-1", testSecret)
	ctx := testkit.Context(t)
	first, err := e.b.Token(ctx, req("acct-1"))
	if err != nil {
		t.Fatal(err)
	}
	if want := epoch.Add(time.Hour); !first.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %v, want %v", first.ExpiresAt, want)
	}

	e.clock.Advance(time.Hour - 331*time.Second)
	for range 5 {
		tok, err := e.b.Token(ctx, req("acct-1"))
		if err != nil || tok.AccessToken != first.AccessToken {
			t.Fatalf("before the refresh point: token %v err %v, want the cached one", tok.AccessToken.Reveal(), err)
		}
	}
	e.b.bg.Wait()
	if got := e.up.calls(); got != 1 {
		t.Fatalf("upstream calls before the refresh point = %d, want 1", got)
	}

	e.clock.Advance(2 * time.Second) // 329 s left: inside the window
	tok, err := e.b.Token(ctx, req("acct-1"))
	if err != nil || tok.AccessToken != first.AccessToken {
		t.Fatalf("in the window: token %v err %v, want the cached one served", tok.AccessToken.Reveal(), err)
	}
	e.b.bg.Wait()
	if got := e.up.calls(); got != 2 {
		t.Fatalf("upstream calls after the refresh point = %d, want 2", got)
	}
	tok, err = e.b.Token(ctx, req("acct-1"))
	if err != nil || tok.AccessToken.Reveal() != e.up.token(2) {
		t.Fatalf("after refresh: token %v err %v, want %s", tok.AccessToken.Reveal(), err, e.up.token(2))
	}
	if got, want := e.obs.hits.Load(), int64(7); got != want {
		t.Errorf("cache hits = %d, want %d", got, want)
	}
	if got := e.obs.misses.Load(); got != 1 {
		t.Errorf("cache misses = %d, want 1", got)
	}
}

func TestRefreshAheadStartsOneBackgroundCallAndKeepsServing(t *testing.T) {
	e := newEnv(t, nil)
	e.st.install(testApp, "acct-1", testSecret)
	ctx := testkit.Context(t)
	first, err := e.b.Token(ctx, req("acct-1"))
	if err != nil {
		t.Fatal(err)
	}
	e.up.waitReceived(t)
	e.clock.Advance(time.Hour - 4*time.Minute)
	e.up.hold()

	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			tok, err := e.b.Token(ctx, req("acct-1"))
			if err != nil || tok.AccessToken != first.AccessToken {
				t.Errorf("during refresh: token %v err %v, want the cached one", tok.AccessToken.Reveal(), err)
			}
		})
	}
	wg.Wait() // every caller answered while the refresh is still held upstream
	e.up.waitReceived(t)
	if got := e.obs.refreshes.Load(); got != 1 {
		t.Errorf("refreshes started = %d, want 1", got)
	}
	e.up.open()
	e.b.bg.Wait()
	if got := e.up.calls(); got != 2 {
		t.Errorf("upstream calls = %d, want 2", got)
	}
	tok, err := e.b.Token(ctx, req("acct-1"))
	if err != nil || tok.AccessToken.Reveal() != e.up.token(2) {
		t.Errorf("after refresh: token %v err %v, want %s", tok.AccessToken.Reveal(), err, e.up.token(2))
	}
	if want := epoch.Add(time.Hour - 4*time.Minute + time.Hour); !tok.ExpiresAt.Equal(want) {
		t.Errorf("refreshed ExpiresAt = %v, want %v", tok.ExpiresAt, want)
	}
}

func TestMinValid(t *testing.T) {
	tests := []struct {
		name     string
		elapsed  time.Duration // since the cached token was minted (lifetime 1h)
		minValid time.Duration
		wantNew  bool
	}{
		{"fresh, no demand", 0, 0, false},
		{"fresh, 30m demanded", 0, 30 * time.Minute, false},
		{"40m left, 30m demanded", 20 * time.Minute, 30 * time.Minute, false},
		{"20m left, 30m demanded", 40 * time.Minute, 30 * time.Minute, true},
		{"30m left exactly, 30m demanded", 30 * time.Minute, 30 * time.Minute, true},
		{"4m left, 1m demanded: served in refresh window", 56 * time.Minute, time.Minute, false},
		{"4s left, no demand: too close to expiry", time.Hour - 4*time.Second, 0, true},
		{"expired", 2 * time.Hour, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.st.install(testApp, "acct-1", testSecret)
			ctx := testkit.Context(t)
			if _, err := e.b.Token(ctx, req("acct-1")); err != nil {
				t.Fatal(err)
			}
			e.up.hold() // a refresh ahead must not race the synchronous answer
			e.clock.Advance(tt.elapsed)
			r := req("acct-1")
			r.MinValid = tt.minValid
			if tt.wantNew {
				e.up.open()
			}
			tok, err := e.b.Token(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			want := e.up.token(1)
			if tt.wantNew {
				want = e.up.token(2)
			}
			if got := tok.AccessToken.Reveal(); got != want {
				t.Errorf("token = %s, want %s", got, want)
			}
			e.up.open()
		})
	}
}

func TestCallerCancellingDoesNotFailOtherWaiters(t *testing.T) {
	e := newEnv(t, nil)
	e.st.install(testApp, "acct-1", testSecret)
	ctx := testkit.Context(t)
	e.up.hold()

	cctx, cancel := context.WithCancel(ctx)
	firstErr := make(chan error, 1)
	go func() {
		_, err := e.b.Token(cctx, req("acct-1"))
		firstErr <- err
	}()
	e.up.waitReceived(t) // the first caller's fetch is in flight

	const others = 9
	results := make(chan error, others)
	for range others {
		go func() {
			tok, err := e.b.Token(ctx, req("acct-1"))
			if err == nil && tok.AccessToken.Reveal() != e.up.token(1) {
				err = fmt.Errorf("got token %s", tok.AccessToken.Reveal())
			}
			results <- err
		}()
	}
	cancel()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller err = %v, want context.Canceled", err)
	}
	e.up.open()
	for range others {
		if err := <-results; err != nil {
			t.Errorf("other waiter: %v", err)
		}
	}
	if got := e.up.calls(); got != 1 {
		t.Errorf("upstream calls = %d, want 1", got)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	st := newFakeStore()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no AuthURL", Config{}},
		{"relative AuthURL", Config{AuthURL: "auth.trackunit.com"}},
		{"bad default scope", Config{AuthURL: "https://auth.example", DefaultScopes: []string{"a b"}}},
		{"negative margin", Config{AuthURL: "https://auth.example", RefreshMargin: -time.Second}},
		{"negative attempts", Config{AuthURL: "https://auth.example", MaxAttempts: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg, st); err == nil {
				t.Error("New succeeded, want an error")
			}
		})
	}
	if _, err := New(Config{AuthURL: "https://auth.example"}, nil); err == nil {
		t.Error("New with a nil store succeeded")
	}
	b, err := New(Config{AuthURL: "https://auth.example/"}, st)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{b.tokenURL, b.margin, b.maxAttempts, b.maxRetryAfter, b.baseBackoff, b.cache.max}
	// A zero RefreshMargin is a zero margin (TOKEN_REFRESH_MARGIN=0), not
	// a default: config supplies the default.
	want := []any{"https://auth.example/apptoken", time.Duration(0), 3, 10 * time.Second, 200 * time.Millisecond, 100_000}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestRefreshThatFindsTheInstallGoneEndsItsCachedTokens(t *testing.T) {
	tests := []struct {
		name   string
		change func(e *env)
		want   error
	}{
		{"uninstalled without an Invalidate", func(e *env) { e.st.setStatus(testApp, "acct-1", store.StatusUninstalled) }, ErrUninstalled},
		{"credentials revoked upstream", func(e *env) {
			e.up.setAlways(&reply{Raw: true, Status: 401, ContentType: "application/json", Body: `{"error":"invalid_client"}`})
		}, ErrCredentialsRejected},
		{"scope no longer granted", func(e *env) {
			e.up.setAlways(&reply{Raw: true, Status: 400, ContentType: "application/json", Body: `{"error":"invalid_scope"}`})
		}, ErrInvalidScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.st.install(testApp, "acct-1", testSecret)
			ctx := testkit.Context(t)
			first, err := e.b.Token(ctx, req("acct-1"))
			if err != nil {
				t.Fatal(err)
			}
			tt.change(e)
			e.clock.Advance(time.Hour - 2*time.Minute)
			tok, err := e.b.Token(ctx, req("acct-1")) // served, starts the refresh
			if err != nil || tok.AccessToken != first.AccessToken {
				t.Fatalf("token %v err %v, want the cached one", tok.AccessToken.Reveal(), err)
			}
			e.b.bg.Wait()
			if _, err := e.b.Token(ctx, req("acct-1")); !errors.Is(err, tt.want) {
				t.Errorf("after the refresh: err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCancelledCallerStartsNoFetch(t *testing.T) {
	e := newEnv(t, nil)
	e.st.install(testApp, "acct-1", testSecret)
	ctx, cancel := context.WithCancel(testkit.Context(t))
	cancel()
	if _, err := e.b.Token(ctx, req("acct-1")); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if got := e.st.credCalls.Load() + e.up.calls(); got != 0 {
		t.Errorf("store and upstream calls = %d, want 0", got)
	}
}
