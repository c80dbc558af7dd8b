package api_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// userHarness is the harness plus an internal listener that serves API
// users, backed by the harness's store and simulator.
type userHarness struct {
	*harness
	apiUsers *token.APIUserTokens
	url      string
}

func newUserHarness(t *testing.T) *userHarness {
	t.Helper()
	h := newHarness(t, harnessOptions{})
	return &userHarness{harness: h, apiUsers: h.svc.APIUsers, url: h.internal.URL}
}

// apiUserRPC calls a procedure with the Connect protocol's JSON, as curl would.
func apiUserRPC(t *testing.T, base, procedure, bearer, body string) (int, map[string]any, string) {
	t.Helper()
	status, raw := testkit.PostJSON(t, base+procedure, body, testkit.Bearer(bearer))
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatalf("%s answered %d with non-JSON %q", procedure, status, raw)
	}
	return status, m, raw
}

const (
	procCreateAPIUser   = "/irisx.broker.v1.ApiUserService/CreateApiUser"
	procListAPIUsers    = "/irisx.broker.v1.ApiUserService/ListApiUsers"
	procDeleteAPIUser   = "/irisx.broker.v1.ApiUserService/DeleteApiUser"
	procGetAPIUserToken = "/irisx.broker.v1.TokenService/GetApiUserToken"
)

func createAPIUserBody(name, username string, password crypto.Secret, clientID string, secret crypto.Secret) string {
	b, _ := json.Marshal(map[string]string{"name": name, "username": username, "password": password.Reveal(),
		"clientId": clientID, "clientSecret": secret.Reveal()})
	return string(b)
}

func TestApiUserServiceEndToEnd(t *testing.T) {
	h := newUserHarness(t)
	clientID, secret := trackunitsim.NewClientCredentials()
	password := crypto.Secret("correct-horse-battery-staple-7")
	h.sim.AddUser("reporting@api.example", password, clientID, secret)
	var leaks []string // every response body and error message, scanned at the end

	status, m, raw := apiUserRPC(t, h.url, procCreateAPIUser, adminToken, createAPIUserBody("reporting", "reporting@api.example", "wrong-password", clientID, secret))
	leaks = append(leaks, raw)
	if status != http.StatusOK {
		t.Fatalf("CreateApiUser: %d %s", status, raw)
	}
	user, _ := m["apiUser"].(map[string]any)
	if user["name"] != "reporting" || user["username"] != "reporting@api.example" || user["status"] != "active" ||
		!cmp.Equal(user["scopes"], []any{"api", "offline_access"}) || user["createdAt"] == nil {
		t.Errorf("CreateApiUser answered %s", raw)
	}

	// Wrong password: failed_precondition, and ListApiUsers says why.
	status, m, raw = apiUserRPC(t, h.url, procGetAPIUserToken, internalToken, `{"name":"reporting"}`)
	leaks = append(leaks, raw)
	if status != http.StatusBadRequest || m["code"] != "failed_precondition" {
		t.Fatalf("GetApiUserToken with a wrong password: %d %s", status, raw)
	}
	_, m, raw = apiUserRPC(t, h.url, procListAPIUsers, adminToken, `{}`)
	leaks = append(leaks, raw)
	users, _ := m["apiUsers"].([]any)
	if len(users) != 1 || users[0].(map[string]any)["status"] != "credentials_rejected" || users[0].(map[string]any)["lastError"] != "invalid_grant" {
		t.Errorf("ListApiUsers after a rejection: %s", raw)
	}

	// Creating it again replaces the credentials, at once on this replica.
	status, _, raw = apiUserRPC(t, h.url, procCreateAPIUser, adminToken, createAPIUserBody("reporting", "reporting@api.example", password, clientID, secret))
	leaks = append(leaks, raw)
	if status != http.StatusOK {
		t.Fatalf("replacing CreateApiUser: %d %s", status, raw)
	}
	status, m, raw = apiUserRPC(t, h.url, procGetAPIUserToken, internalToken, `{"name":"reporting","minValidSeconds":600}`)
	if status != http.StatusOK {
		t.Fatalf("GetApiUserToken: %d %s", status, raw)
	}
	tok, _ := m["accessToken"].(string)
	if !h.sim.ValidAccessToken(tok) || m["tokenType"] != "Bearer" || !cmp.Equal(m["scopes"], []any{"api", "offline_access"}) {
		t.Errorf("GetApiUserToken answered %s", raw)
	}
	if exp, err := time.Parse(time.RFC3339Nano, m["expiresAt"].(string)); err != nil || time.Until(exp) < 50*time.Minute {
		t.Errorf("expiresAt = %v (%v), want about an hour ahead", m["expiresAt"], err)
	}
	if pw := h.sim.UserCalls("reporting@api.example", trackunitsim.GrantPassword); pw != 2 {
		t.Errorf("password grants = %d, want 2 (the rejected one and one after replacing)", pw)
	}

	// The gRPC protocol and the Go client types work too.
	c := brokerv1connect.NewTokenServiceClient(http.DefaultClient, h.url, connect.WithGRPCWeb())
	req := connect.NewRequest(&brokerv1.GetApiUserTokenRequest{Name: "reporting"})
	req.Header().Set("Authorization", "Bearer "+internalToken)
	if resp, err := c.GetApiUserToken(context.Background(), req); err != nil || resp.Msg.GetAccessToken() != tok {
		t.Errorf("gRPC-Web GetApiUserToken: %v (same token: %v)", err, err == nil && resp.Msg.GetAccessToken() == tok)
	}
	refresh := storedRefreshToken(t, h.store, "reporting")
	dump := testkit.DumpTables(t, h.pool)
	if !strings.Contains(dump, "reporting@api.example") {
		t.Fatal("the dump does not hold the API user")
	}
	for _, s := range []string{password.Reveal(), clientID, secret.Reveal(), tok, refresh} {
		if strings.Contains(dump, s) || strings.Contains(dump, hex.EncodeToString([]byte(s))) {
			t.Errorf("the database holds a secret of %d bytes in plain text", len(s))
		}
	}

	status, _, raw = apiUserRPC(t, h.url, procDeleteAPIUser, adminToken, `{"name":"reporting"}`)
	if status != http.StatusOK {
		t.Fatalf("DeleteApiUser: %d %s", status, raw)
	}
	for _, c := range []struct{ procedure, body string }{{procGetAPIUserToken, `{"name":"reporting"}`}, {procDeleteAPIUser, `{"name":"reporting"}`}} {
		status, m, raw = apiUserRPC(t, h.url, c.procedure, map[string]string{procGetAPIUserToken: internalToken, procDeleteAPIUser: adminToken}[c.procedure], c.body)
		leaks = append(leaks, raw)
		if status != http.StatusNotFound || m["code"] != "not_found" || !strings.Contains(raw, "API user") {
			t.Errorf("%s after delete: %d %s, want not_found", c.procedure, status, raw)
		}
	}
	if n := strings.Count(testkit.DumpTables(t, h.pool), "api_users:"); n != 0 {
		t.Errorf("%d api_users rows after delete", n)
	}

	secrets := []string{password.Reveal(), "wrong-password", clientID, secret.Reveal(), tok, refresh}
	for _, text := range leaks {
		assertNoAPIUserSecret(t, "a response", text, secrets)
	}
	assertNoAPIUserSecret(t, "the logs", h.logs.String(), secrets)
}

// storedRefreshToken reads the current refresh token under the row lock.
func storedRefreshToken(t *testing.T, st *store.Store, name string) string {
	t.Helper()
	var rt string
	if _, err := st.UpdateAPIUserLocked(context.Background(), name, func(s store.APIUserState) (store.APIUserUpdate, error) {
		rt = s.RefreshToken.Reveal()
		return store.APIUserUpdate{}, nil
	}); err != nil || rt == "" {
		t.Fatalf("reading the refresh token: %v (found: %v)", err, rt != "")
	}
	return rt
}

func assertNoAPIUserSecret(t *testing.T, where, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains a secret (%d bytes)", where, len(s))
		}
	}
}

func TestApiUserAuthAndValidation(t *testing.T) {
	h := newUserHarness(t)
	clientID, secret := trackunitsim.NewClientCredentials()
	valid := createAPIUserBody("ops", "ops@api.example", "pw-ops-1", clientID, secret)
	for _, tc := range []struct {
		name, procedure, bearer, body string
		wantStatus                    int
		wantCode, wantMessage         string
	}{
		{"create without a token", procCreateAPIUser, "", valid, 401, "unauthenticated", ""},
		{"create with an internal token", procCreateAPIUser, internalToken, valid, 401, "unauthenticated", ""},
		{"list with an internal token", procListAPIUsers, internalToken, `{}`, 401, "unauthenticated", ""},
		{"delete with an internal token", procDeleteAPIUser, internalToken, `{"name":"ops"}`, 401, "unauthenticated", ""},
		{"token with an admin token", procGetAPIUserToken, adminToken, `{"name":"ops"}`, 401, "unauthenticated", ""},
		{"token without a token", procGetAPIUserToken, "", `{"name":"ops"}`, 401, "unauthenticated", ""},
		{"create without a password", procCreateAPIUser, adminToken, createAPIUserBody("ops", "ops@api.example", "", clientID, secret), 400, "invalid_argument", "password is required"},
		{"create without a name", procCreateAPIUser, adminToken, createAPIUserBody("", "ops@api.example", "pw", clientID, secret), 400, "invalid_argument", "name must be"},
		{"create with a bad scope", procCreateAPIUser, adminToken, `{"name":"ops","username":"u","password":"p","clientId":"c","clientSecret":"s","scopes":["a b"]}`, 400, "invalid_argument", "scopes must be"},
		{"delete without a name", procDeleteAPIUser, adminToken, `{}`, 400, "invalid_argument", "name is required"},
		{"delete an unknown user", procDeleteAPIUser, adminToken, `{"name":"nobody"}`, 404, "not_found", "no such API user"},
		{"token for an unknown user", procGetAPIUserToken, internalToken, `{"name":"nobody"}`, 404, "not_found", "no such API user"},
		{"token with a malformed name", procGetAPIUserToken, internalToken, `{"name":"no spaces"}`, 400, "invalid_argument", "name is required"},
		{"token with minValidSeconds too large", procGetAPIUserToken, internalToken, `{"name":"ops","minValidSeconds":5000}`, 400, "invalid_argument", "minValidSeconds"},
	} {
		status, m, raw := apiUserRPC(t, h.url, tc.procedure, tc.bearer, tc.body)
		if status != tc.wantStatus || m["code"] != tc.wantCode || !strings.Contains(raw, tc.wantMessage) {
			t.Errorf("%s: %d %s, want %d %s %q", tc.name, status, raw, tc.wantStatus, tc.wantCode, tc.wantMessage)
		}
		assertNoAPIUserSecret(t, tc.name, raw, []string{secret.Reveal(), "pw-ops-1"})
	}
	if n := strings.Count(testkit.DumpTables(t, h.pool), "api_users:"); n != 0 {
		t.Errorf("refused calls stored %d API users", n)
	}

}
