package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// randomKIDToken is a well-formed token naming kid; its signature is junk,
// which does not matter because no key has that kid.
func randomKIDToken(kid string) string {
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": kid})
	return b64url(h) + "." + b64url([]byte(`{"exp":1}`)) + "." + b64url([]byte("sig"))
}

func TestUnknownKIDStormFetchesOncePerCooldown(t *testing.T) {
	srv := newJWKSServer(t, jwksJSON(t, defaultKeys(t)...))
	h := startVerifier(t, srv, defaultConfig())
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("initial fetches = %d, want 1", got)
	}

	const n = 1000
	reasons := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := h.v.Verify(testkit.Context(t), randomKIDToken(fmt.Sprintf("random-%d-%x", i, i*7919)))
			reasons[i] = ReasonOf(err)
		})
	}
	wg.Wait()
	for i, r := range reasons {
		if r != ReasonUnknownKID {
			t.Fatalf("Verify %d: reason %q, want %q", i, r, ReasonUnknownKID)
		}
	}
	if got := srv.hits.Load(); got != 2 {
		t.Errorf("fetches after %d unknown kids = %d, want 2 (initial + one refetch)", n, got)
	}

	// Still within the cooldown: no fetch.
	h.clock.Advance(DefaultUnknownKIDCooldown - time.Second)
	_, _ = h.v.Verify(testkit.Context(t), randomKIDToken("late"))
	if got := srv.hits.Load(); got != 2 {
		t.Errorf("fetches within the cooldown = %d, want 2", got)
	}

	// Past the cooldown: exactly one more.
	h.clock.Advance(time.Second)
	_, _ = h.v.Verify(testkit.Context(t), randomKIDToken("after-cooldown-1"))
	_, _ = h.v.Verify(testkit.Context(t), randomKIDToken("after-cooldown-2"))
	if got := srv.hits.Load(); got != 3 {
		t.Errorf("fetches after the cooldown = %d, want 3", got)
	}
}

func TestRotatedKeyIsFetchedOnDemand(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, jwksJSON(t, rsaA))
	h := startVerifier(t, srv, defaultConfig())

	srv.serveJSON(jwksJSON(t, rsaA, ec256)) // Trackunit rotates ec-256 in
	id, err := h.v.Verify(testkit.Context(t), mint(t, ec256, "", validClaims(), nil))
	if err != nil {
		t.Fatalf("Verify with the rotated-in key: %v", err)
	}
	if diff := cmp.Diff(validIdentity(), id); diff != "" {
		t.Errorf("identity (-want +got):\n%s", diff)
	}
	if got := srv.hits.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
	// The old key still works, and no more fetches happen.
	if _, err := h.v.Verify(testkit.Context(t), mint(t, rsaA, "", validClaims(), nil)); err != nil {
		t.Errorf("Verify with the old key: %v", err)
	}
	if got := srv.hits.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
}

func TestPeriodicRefresh(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, jwksJSON(t, rsaA))
	h := startVerifier(t, srv, defaultConfig())

	srv.serveJSON(jwksJSON(t, ec256)) // rsa-a retired, ec-256 in
	if got := h.refresh(t); got != FetchOK {
		t.Fatalf("refresh outcome = %q", got)
	}
	if _, err := h.v.Verify(testkit.Context(t), mint(t, ec256, "", validClaims(), nil)); err != nil {
		t.Errorf("Verify with the new key: %v", err)
	}
	_, err := h.v.Verify(testkit.Context(t), mint(t, rsaA, "", validClaims(), nil))
	if got := ReasonOf(err); got != ReasonUnknownKID {
		t.Errorf("retired key: reason %q, want %q", got, ReasonUnknownKID)
	}
	// Each fetch (initial, periodic, and the retired kid's on-demand one)
	// scheduled the next one a RefreshInterval later.
	want := []time.Duration{DefaultRefreshInterval, DefaultRefreshInterval, DefaultRefreshInterval}
	if diff := cmp.Diff(want, h.timerDelays(t, len(want))); diff != "" {
		t.Errorf("timer delays (-want +got):\n%s", diff)
	}
}

func TestFailingJWKSKeepsLastGoodKeys(t *testing.T) {
	testKeys(t)
	huge := `{"keys":[` + strings.Repeat(" ", 5<<20) + `]}`
	cases := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"500", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) }},
		{"HTML", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>maintenance</body></html>"))
		}},
		{"truncated JSON", func(w http.ResponseWriter, _ *http.Request) {
			b := jwksJSON(t, rsaA)
			_, _ = w.Write(b[:len(b)/2])
		}},
		{"invalid JSON", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"keys":[`)) }},
		{"no keys member", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"kty":"RSA"}`)) }},
		{"empty key set", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"keys":[]}`)) }},
		{"only symmetric keys", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","kid":"rsa-a","k":"c2VjcmV0"}]}`))
		}},
		{"5 MB body", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(huge)) }},
		{"hanging", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{"hanging after headers", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"keys":[`))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newJWKSServer(t, jwksJSON(t, rsaA))
			cfg := defaultConfig()
			cfg.FetchTimeout = 200 * time.Millisecond
			h := startVerifier(t, srv, cfg)
			tok := mint(t, rsaA, "", validClaims(), nil)
			if _, err := h.v.Verify(testkit.Context(t), tok); err != nil {
				t.Fatalf("Verify before the failure: %v", err)
			}

			srv.set(tc.handler)
			if got := h.refresh(t); got != FetchError {
				t.Fatalf("refresh outcome = %q, want %q", got, FetchError)
			}
			if !h.v.Ready() {
				t.Error("Ready() = false after a failed refresh; the last good set should stay")
			}
			if _, err := h.v.Verify(testkit.Context(t), tok); err != nil {
				t.Errorf("Verify after the failure: %v", err)
			}
			// A failure schedules a quick retry instead of a full interval.
			want := []time.Duration{DefaultRefreshInterval, firstRetry}
			if diff := cmp.Diff(want, h.timerDelays(t, len(want))); diff != "" {
				t.Errorf("timer delays (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRetryBackoff(t *testing.T) {
	srv := newJWKSServer(t, nil)
	srv.set(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	cfg := defaultConfig()
	cfg.RefreshInterval = 100 * time.Second
	h := startVerifier(t, srv, cfg)
	for range 8 {
		h.refresh(t)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 100, 100}
	for i := range want {
		want[i] *= time.Second
	}
	if diff := cmp.Diff(want, h.timerDelays(t, len(want))); diff != "" {
		t.Errorf("timer delays (-want +got):\n%s", diff)
	}
}

func TestReadyAndKeySetAge(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, nil)
	srv.set(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	h := startVerifier(t, srv, defaultConfig())

	if h.v.Ready() {
		t.Error("Ready() = true before any good fetch")
	}
	if got := h.v.KeySetAge(); got != 0 {
		t.Errorf("KeySetAge() = %v before any good fetch, want 0", got)
	}
	tok := mint(t, rsaA, "", validClaims(), nil)
	// No keys: the request asks for a refetch (which fails too).
	_, err := h.v.Verify(testkit.Context(t), tok)
	if got := ReasonOf(err); got != ReasonNoKeys {
		t.Errorf("reason = %q, want %q", got, ReasonNoKeys)
	}
	if got := srv.hits.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2 (initial + on demand)", got)
	}

	srv.serveJSON(jwksJSON(t, rsaA))
	// Within the cooldown nothing is fetched, so still no keys.
	_, err = h.v.Verify(testkit.Context(t), tok)
	if got := ReasonOf(err); got != ReasonNoKeys {
		t.Errorf("reason within cooldown = %q, want %q", got, ReasonNoKeys)
	}
	h.clock.Advance(DefaultUnknownKIDCooldown)
	if _, err := h.v.Verify(testkit.Context(t), tok); err != nil {
		t.Fatalf("Verify once the JWKS answers: %v", err)
	}
	if !h.v.Ready() {
		t.Error("Ready() = false after a good fetch")
	}
	h.clock.Advance(42 * time.Second)
	if got := h.v.KeySetAge(); got != 42*time.Second {
		t.Errorf("KeySetAge() = %v, want 42s", got)
	}
}

func TestWaitForRefetchIsBoundedByContext(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, jwksJSON(t, rsaA))
	release := make(chan struct{})
	h := startVerifier(t, srv, defaultConfig())
	srv.set(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := h.v.Verify(ctx, randomKIDToken("needs-refetch"))
	if got := ReasonOf(err); got != ReasonUnknownKID {
		t.Errorf("reason = %q, want %q", got, ReasonUnknownKID)
	}
	if ctx.Err() == nil {
		t.Error("Verify returned before its context ended, yet the refetch hangs")
	}
}

func TestRunLifecycle(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, jwksJSON(t, rsaA))
	obs := newRecObserver()
	v, err := New(Config{JWKSURL: srv.URL, Observer: obs, Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	tok := mint(t, rsaA, "", validClaims(), nil)

	// Without Run nothing is fetched, not even on demand.
	_, err = v.Verify(testkit.Context(t), tok)
	if got := ReasonOf(err); got != ReasonNoKeys {
		t.Errorf("reason without Run = %q, want %q", got, ReasonNoKeys)
	}
	if got := srv.hits.Load(); got != 0 {
		t.Errorf("fetches without Run = %d, want 0", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); v.Run(ctx) }()
	if got := obs.waitFetch(t); got != FetchOK {
		t.Fatalf("initial fetch = %q", got)
	}

	// A second Run while the first runs returns at once.
	second := make(chan struct{})
	go func() { v.Run(ctx); close(second) }()
	select {
	case <-second:
	case <-time.After(20 * time.Second):
		t.Fatal("a concurrent second Run did not return")
	}

	// A request waiting on a hanging refetch is let go when Run stops.
	srv.set(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	vctx := testkit.Context(t)
	errc := make(chan error, 1)
	go func() {
		_, err := v.Verify(vctx, randomKIDToken("needs-refetch"))
		errc <- err
	}()
	for srv.hits.Load() < 2 {
		select {
		case <-vctx.Done():
			t.Fatal("the refetch never reached the server")
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	select {
	case err := <-errc:
		if got := ReasonOf(err); got != ReasonUnknownKID {
			t.Errorf("reason = %q, want %q", got, ReasonUnknownKID)
		}
		if vctx.Err() != nil {
			t.Error("the waiter was released by its own deadline, not by Run stopping")
		}
	case <-vctx.Done():
		t.Fatal("the waiter was not released")
	}
	<-done

	// Once Run has stopped, the last good keys still verify and nothing is fetched.
	if _, err := v.Verify(testkit.Context(t), tok); err != nil {
		t.Errorf("Verify after Run stopped: %v", err)
	}
	_, _ = v.Verify(testkit.Context(t), randomKIDToken("after-stop"))
	if got := srv.hits.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
}
