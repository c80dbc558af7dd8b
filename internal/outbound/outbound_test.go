package outbound

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func TestNoRedirectIsFollowed(t *testing.T) {
	var reached atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
	}))
	defer target.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()

	for name, c := range map[string]*http.Client{
		"New":         New(Options{}),
		"NoRedirects": NoRedirects(&http.Client{}),
	} {
		resp, err := c.Post(redirector.URL, "application/x-www-form-urlencoded", nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTemporaryRedirect {
			t.Errorf("%s: status %d, want the 307 itself", name, resp.StatusCode)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("redirect target received %d requests, want 0", n)
	}
}
