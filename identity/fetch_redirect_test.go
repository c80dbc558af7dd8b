package identity

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// A JWKS endpoint answering 307 is a failed fetch: the redirect's target
// receives no request, even with a client that would follow redirects,
// and the last good key set keeps serving.
func TestJWKSRedirectNotFollowed(t *testing.T) {
	testKeys(t)
	var targetHits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		targetHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwksJSON(t, rsaA))
	}))
	t.Cleanup(target.Close)

	srv := newJWKSServer(t, jwksJSON(t, rsaA))
	h := startVerifier(t, srv, Config{HTTPClient: &http.Client{}}) // a client that follows redirects
	if !h.v.Ready() {
		t.Fatal("first fetch did not load the keys")
	}
	srv.set(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/jwks", http.StatusTemporaryRedirect)
	})
	for range 3 {
		if got := h.refresh(t); got != FetchError {
			t.Errorf("fetch answered 307: outcome %q, want %q", got, FetchError)
		}
	}
	if n := targetHits.Load(); n != 0 {
		t.Errorf("the redirect target received %d requests, want 0", n)
	}
	if !h.v.Ready() {
		t.Error("the last good key set was dropped")
	}
}
