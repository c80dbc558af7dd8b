package trackunitsim

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var aliceClient = []string{"0oaAlice", "alice-client-secret"}

func newUserSim(t *testing.T, opts Options) (*Sim, string) {
	t.Helper()
	s, srv := newTestSim(t, opts)
	s.AddUser("alice", "alice-pw", aliceClient[0], "alice-client-secret")
	s.AddUser("bob", "bob-pw", "0oaBob", "bob-client-secret")
	return s, srv.URL
}

func passwordForm(user, pw, scope string) url.Values {
	return url.Values{"grant_type": {"password"}, "username": {user}, "password": {pw}, "scope": {scope}}
}

func refreshForm(rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
}

// mustToken runs a /token request that must succeed and returns its body.
func mustToken(t *testing.T, srvURL string, form url.Values) map[string]any {
	t.Helper()
	status, _, body := postForm(t, srvURL, "/token", form, aliceClient)
	if status != http.StatusOK {
		t.Fatalf("/token %s: %d %v", form.Get("grant_type"), status, body)
	}
	return body
}

func wantTokenError(t *testing.T, srvURL string, form url.Values, basic []string, status int, code string) {
	t.Helper()
	gotStatus, _, body := postForm(t, srvURL, "/token", form, basic)
	if gotStatus != status || body["error"] != code {
		t.Errorf("got %d %v, want %d %s", gotStatus, body, status, code)
	}
}

func TestTokenPasswordGrant(t *testing.T) {
	s, u := newUserSim(t, Options{})
	tests := []struct {
		name   string
		form   url.Values
		basic  []string
		status int
		code   string
	}{
		{"no basic auth", passwordForm("alice", "alice-pw", "api"), nil, 401, "invalid_client"},
		{"client in form only", func() url.Values {
			f := passwordForm("alice", "alice-pw", "api")
			f.Set("client_id", aliceClient[0])
			f.Set("client_secret", aliceClient[1])
			return f
		}(), nil, 401, "invalid_client"},
		{"bad client secret", passwordForm("alice", "alice-pw", "api"), []string{aliceClient[0], "nope"}, 401, "invalid_client"},
		{"wrong password", passwordForm("alice", "wrong", "api"), aliceClient, 400, "invalid_grant"},
		{"unknown user", passwordForm("carol", "alice-pw", "api"), aliceClient, 400, "invalid_grant"},
		{"user of another client", passwordForm("bob", "bob-pw", "api"), aliceClient, 400, "invalid_grant"},
		{"no api scope", passwordForm("alice", "alice-pw", "offline_access"), aliceClient, 400, "invalid_scope"},
		{"foreign scope", passwordForm("alice", "alice-pw", "api asset.view"), aliceClient, 400, "invalid_scope"},
		{"missing grant", url.Values{"username": {"alice"}}, aliceClient, 400, "invalid_request"},
		{"unsupported grant", url.Values{"grant_type": {"client_credentials"}}, aliceClient, 400, "unsupported_grant_type"},
		{"unknown refresh token", refreshForm("nope"), aliceClient, 400, "invalid_grant"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantTokenError(t, u, tc.form, tc.basic, tc.status, tc.code)
		})
	}

	body := mustToken(t, u, passwordForm("alice", "alice-pw", "api"))
	at, _ := body["access_token"].(string)
	delete(body, "access_token")
	if diff := cmp.Diff(map[string]any{"token_type": "Bearer", "expires_in": float64(3600), "scope": "api"}, body); diff != "" {
		t.Errorf("without offline_access (-want +got):\n%s", diff)
	}
	if info, ok := s.TokenInfo(at); !ok || info.Subject != "alice" {
		t.Errorf("TokenInfo = %+v, %v; want alice's valid token", info, ok)
	}
	body = mustToken(t, u, passwordForm("alice", "alice-pw", "api offline_access"))
	if rt, _ := body["refresh_token"].(string); rt == "" || body["scope"] != "api offline_access" {
		t.Errorf("with offline_access: %v, want a refresh token", body)
	}

	for _, c := range []struct {
		user, grant string
		want        int
	}{
		{"alice", GrantPassword, 8}, // 6 refused + 2 granted
		{"bob", GrantPassword, 1},
		{"carol", GrantPassword, 1},
		{"alice", GrantRefreshToken, 0},
	} {
		if got := s.UserCalls(c.user, c.grant); got != c.want {
			t.Errorf("UserCalls(%s, %s) = %d, want %d", c.user, c.grant, got, c.want)
		}
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	s, u := newUserSim(t, Options{})
	rt1 := mustToken(t, u, passwordForm("alice", "alice-pw", "api offline_access"))["refresh_token"].(string)

	body := mustToken(t, u, refreshForm(rt1))
	rt2, _ := body["refresh_token"].(string)
	if rt2 == "" || rt2 == rt1 || body["scope"] != "api offline_access" {
		t.Fatalf("refresh answer %v: want a new refresh token and the original scopes", body)
	}
	if !s.ValidAccessToken(body["access_token"].(string)) {
		t.Error("refreshed access token is not valid")
	}
	if s.RefreshTokenUsable(rt1) || !s.RefreshTokenUsable(rt2) {
		t.Error("want the old refresh token spent and the new one usable")
	}

	// Reusing the spent token fails and revokes the whole chain.
	wantTokenError(t, u, refreshForm(rt1), aliceClient, 400, "invalid_grant")
	if s.SpentRefreshReuse() != 1 {
		t.Errorf("SpentRefreshReuse = %d, want 1", s.SpentRefreshReuse())
	}
	wantTokenError(t, u, refreshForm(rt2), aliceClient, 400, "invalid_grant")
	if s.RefreshTokenUsable(rt2) || s.SpentRefreshReuse() != 1 {
		t.Errorf("rt2 usable %v, reuse %d: want revoked, and a revoked (unspent) token is not a reuse", s.RefreshTokenUsable(rt2), s.SpentRefreshReuse())
	}

	// A new password grant starts a new chain.
	rt3 := mustToken(t, u, passwordForm("alice", "alice-pw", "api offline_access"))["refresh_token"].(string)
	// Another client cannot use it, and trying does not spend it.
	wantTokenError(t, u, refreshForm(rt3), []string{"0oaBob", "bob-client-secret"}, 400, "invalid_grant")
	// Narrower scope requests are fine, wider ones not.
	form := refreshForm(rt3)
	form.Set("scope", "api asset.view")
	wantTokenError(t, u, form, aliceClient, 400, "invalid_scope")
	form.Set("scope", "api")
	if body := mustToken(t, u, form); body["scope"] != "api offline_access" {
		t.Errorf("scope after refresh = %v, want the original grant", body["scope"])
	}

	if got := s.UserCalls("alice", GrantRefreshToken); got != 6 {
		t.Errorf("UserCalls(alice, refresh_token) = %d, want 6", got)
	}
	if got := s.UserCalls("alice", GrantPassword); got != 2 {
		t.Errorf("UserCalls(alice, password) = %d, want 2", got)
	}
}

func TestRefreshGrace(t *testing.T) {
	clock := newClock()
	s, u := newUserSim(t, Options{Now: clock.Now, RefreshGrace: 30 * time.Second})
	rt1 := mustToken(t, u, passwordForm("alice", "alice-pw", "api offline_access"))["refresh_token"].(string)
	rt2 := mustToken(t, u, refreshForm(rt1))["refresh_token"].(string)

	clock.Advance(10 * time.Second)
	if !s.RefreshTokenUsable(rt1) {
		t.Error("spent token unusable within grace")
	}
	rt2b := mustToken(t, u, refreshForm(rt1))["refresh_token"].(string)
	if rt2b == rt2 || s.SpentRefreshReuse() != 0 {
		t.Errorf("retry within grace: new token %v, reuse %d; want a fresh token and no reuse", rt2b != rt2, s.SpentRefreshReuse())
	}

	// The window runs from the first use, not from the retry.
	clock.Advance(25 * time.Second)
	wantTokenError(t, u, refreshForm(rt1), aliceClient, 400, "invalid_grant")
	if s.SpentRefreshReuse() != 1 {
		t.Errorf("SpentRefreshReuse = %d, want 1", s.SpentRefreshReuse())
	}
	for _, rt := range []string{rt2, rt2b} {
		if s.RefreshTokenUsable(rt) {
			t.Error("a descendant survived the reuse")
		}
	}
}

func TestRevokeRefreshTokens(t *testing.T) {
	s, u := newUserSim(t, Options{})
	rt := mustToken(t, u, passwordForm("alice", "alice-pw", "api offline_access"))["refresh_token"].(string)
	s.RevokeRefreshTokens("alice")
	wantTokenError(t, u, refreshForm(rt), aliceClient, 400, "invalid_grant")
	if s.SpentRefreshReuse() != 0 {
		t.Errorf("SpentRefreshReuse = %d, want 0", s.SpentRefreshReuse())
	}
	mustToken(t, u, passwordForm("alice", "alice-pw", "api"))
}
