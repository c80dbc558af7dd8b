package trackunitsim

import (
	"net/http"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func appTokenForm(clientID, secret, scope string) url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}, "scope": {scope}}
}

func TestAppToken(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	s.AddClient("0oaGood", "s3cret", nil)
	s.AddClient("0oaNarrow", "n4rrow", []string{"asset.view"})
	s.AddClient("0oaRevoked", "r3voked", nil)
	s.RevokeClient("0oaRevoked")

	tests := []struct {
		name       string
		form       url.Values
		basic      []string
		wantStatus int
		wantError  string
	}{
		{"bad secret", appTokenForm("0oaGood", "wrong", "asset.view"), nil, 401, "invalid_client"},
		{"unknown client", appTokenForm("0oaNobody", "s3cret", "asset.view"), nil, 401, "invalid_client"},
		{"revoked", appTokenForm("0oaRevoked", "r3voked", "asset.view"), nil, 401, "invalid_client"},
		{"basic header instead of form", url.Values{"grant_type": {"client_credentials"}, "scope": {"asset.view"}},
			[]string{"0oaGood", "s3cret"}, 401, "invalid_client"},
		{"scope not granted to client", appTokenForm("0oaNarrow", "n4rrow", "asset.view account.view"), nil, 400, "invalid_scope"},
		{"scope not published", appTokenForm("0oaGood", "s3cret", "asset.view admin.everything"), nil, 400, "invalid_scope"},
		{"no scope", appTokenForm("0oaGood", "s3cret", ""), nil, 400, "invalid_scope"},
		{"missing grant", url.Values{"client_id": {"0oaGood"}, "client_secret": {"s3cret"}, "scope": {"asset.view"}}, nil, 400, "invalid_request"},
		{"unsupported grant", url.Values{"grant_type": {"password"}, "client_id": {"0oaGood"}, "client_secret": {"s3cret"}, "scope": {"asset.view"}}, nil, 400, "unsupported_grant_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := postForm(t, srv.URL, "/apptoken", tc.form, tc.basic)
			if status != tc.wantStatus || body["error"] != tc.wantError {
				t.Errorf("got %d %v, want %d %s", status, body, tc.wantStatus, tc.wantError)
			}
			if d, _ := body["error_description"].(string); d == "" {
				t.Errorf("no error_description in %v", body)
			}
			if _, ok := body["access_token"]; ok {
				t.Errorf("error answer carries a token: %v", body)
			}
		})
	}

	status, hdr, body := postForm(t, srv.URL, "/apptoken", appTokenForm("0oaGood", "s3cret", "asset.view account.asset.manage asset.view"), nil)
	tok, _ := body["access_token"].(string)
	delete(body, "access_token")
	want := map[string]any{"token_type": "Bearer", "expires_in": float64(3600), "scope": "asset.view account.asset.manage"}
	if diff := cmp.Diff(want, body); status != http.StatusOK || diff != "" {
		t.Fatalf("status %d, body (-want +got):\n%s", status, diff)
	}
	if hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", hdr.Get("Cache-Control"))
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{40,}$`).MatchString(tok) || !s.ValidAccessToken(tok) {
		t.Errorf("access token %q: want opaque and valid", tok)
	}
	if s.ValidAccessToken("made-up") {
		t.Error("an unknown token is valid")
	}

	// Counters: every request that named a client counts for it.
	for id, want := range map[string]int{"0oaGood": 6, "0oaNarrow": 1, "0oaRevoked": 1, "0oaNobody": 1} {
		if got := s.ClientCalls(id); got != want {
			t.Errorf("ClientCalls(%s) = %d, want %d", id, got, want)
		}
	}
	if got := s.Calls(EndpointAppToken); got != len(tests)+1 {
		t.Errorf("Calls(apptoken) = %d, want %d", got, len(tests)+1)
	}
}

func TestAppTokenExpiryAndInfo(t *testing.T) {
	clock := newClock()
	s, srv := newTestSim(t, Options{Now: clock.Now, TokenTTL: 10 * time.Minute, AllowedScopes: []string{"a", "b"}})
	s.AddClient("0oaC", "sec", nil)
	status, _, body := postForm(t, srv.URL, "/apptoken", appTokenForm("0oaC", "sec", "b"), nil)
	if status != http.StatusOK || body["expires_in"] != float64(600) {
		t.Fatalf("got %d %v, want 200 with expires_in 600", status, body)
	}
	tok := body["access_token"].(string)
	info, ok := s.TokenInfo(tok)
	want := TokenInfo{Subject: "0oaC", Scopes: []string{"b"}, ExpiresAt: t0.Add(10 * time.Minute)}
	if diff := cmp.Diff(want, info); !ok || diff != "" {
		t.Errorf("TokenInfo (-want +got):\n%s", diff)
	}
	clock.Advance(10*time.Minute - time.Second)
	if !s.ValidAccessToken(tok) {
		t.Error("token invalid before its expiry")
	}
	clock.Advance(time.Second)
	if s.ValidAccessToken(tok) {
		t.Error("token still valid at its expiry")
	}
	// A scope outside Options.AllowedScopes is refused.
	if status, _, body := postForm(t, srv.URL, "/apptoken", appTokenForm("0oaC", "sec", "asset.view"), nil); status != 400 || body["error"] != "invalid_scope" {
		t.Errorf("got %d %v, want 400 invalid_scope", status, body)
	}
}

func TestNewClientCredentials(t *testing.T) {
	id, secret := NewClientCredentials()
	id2, secret2 := NewClientCredentials()
	if !regexp.MustCompile(`^0oa[A-Za-z0-9]{17}$`).MatchString(id) || id == id2 {
		t.Errorf("client ids %q, %q: want random 0oa + 17", id, id2)
	}
	if len(secret.Reveal()) != 40 || secret == secret2 {
		t.Errorf("secret length %d, want 40 and random", len(secret.Reveal()))
	}
}
