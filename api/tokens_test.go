package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// install has the simulator send a signed INSTALLED for account, as
// Trackunit would, and returns the credentials it sent.
func (h *harness) install(account string) (clientID string, secret crypto.Secret) {
	h.t.Helper()
	clientID, secret = trackunitsim.NewClientCredentials()
	h.sendEvent(trackunitsim.InstallEvent{Type: "INSTALLED", IrisAppID: testApp, AccountID: account, ClientID: clientID, ClientSecret: secret})
	return clientID, secret
}

func (h *harness) sendEvent(ev trackunitsim.InstallEvent) {
	h.t.Helper()
	status, body, err := h.sim.SendInstall(context.Background(), h.public.URL+"/appinstall", ev, "")
	if err != nil || status != http.StatusOK {
		h.t.Fatalf("sending %s: %d %s %v", ev.Type, status, body, err)
	}
}

// getTokenJSON calls GetToken the way the contract's curl example does.
func (h *harness) getTokenJSON(bearerToken, body string) (int, map[string]any) {
	h.t.Helper()
	status, raw := testkit.PostJSON(h.t, h.internal.URL+"/irisx.broker.v1.TokenService/GetToken", body, testkit.Bearer(bearerToken))
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		h.t.Fatalf("GetToken answered %d with non-JSON %q", status, raw)
	}
	return status, m
}

func (h *harness) tokenFor(account string) string {
	h.t.Helper()
	status, m := h.getTokenJSON(internalToken, `{"irisAppId":"`+testApp+`","accountId":"`+account+`"}`)
	if status != http.StatusOK {
		h.t.Fatalf("GetToken: %d %v", status, m)
	}
	tok, _ := m["accessToken"].(string)
	return tok
}

func TestGetTokenConnectJSON(t *testing.T) {
	h := newHarness(t, harnessOptions{allowedApps: []string{testApp}})
	account := uuid.NewString()
	h.install(account)

	status, m := h.getTokenJSON(internalToken, `{"accountId":"`+account+`"}`)
	if status != http.StatusOK {
		t.Fatalf("GetToken: %d %v", status, m)
	}
	tok, _ := m["accessToken"].(string)
	if !h.sim.ValidAccessToken(tok) {
		t.Errorf("accessToken %q was not issued by Trackunit's /apptoken", tok)
	}
	exp, err := time.Parse(time.RFC3339Nano, m["expiresAt"].(string))
	if err != nil || time.Until(exp) < 50*time.Minute {
		t.Errorf("expiresAt = %v (%v), want an RFC 3339 time about an hour ahead", m["expiresAt"], err)
	}
	if m["tokenType"] != "Bearer" {
		t.Errorf("tokenType = %v", m["tokenType"])
	}
	if scopes, _ := m["scopes"].([]any); len(scopes) != 1 || scopes[0] != "asset.view" {
		t.Errorf("scopes = %v, want the default [asset.view]", m["scopes"])
	}
	// Cached: the second call reuses the token without another upstream call.
	calls := h.sim.Calls(trackunitsim.EndpointAppToken)
	if again := h.tokenFor(account); again != tok || h.sim.Calls(trackunitsim.EndpointAppToken) != calls {
		t.Error("the second call did not reuse the cached token")
	}
}

func TestGetTokenGRPC(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	account := uuid.NewString()
	h.install(account)
	h2c := &http.Client{Transport: &http.Transport{
		Protocols: func() *http.Protocols { p := new(http.Protocols); p.SetUnencryptedHTTP2(true); return p }(),
	}}
	for name, opt := range map[string]connect.ClientOption{"grpc": connect.WithGRPC(), "grpc-web": connect.WithGRPCWeb()} {
		t.Run(name, func(t *testing.T) {
			c := brokerv1connect.NewTokenServiceClient(h2c, h.internal.URL, opt)
			req := connect.NewRequest(&brokerv1.GetTokenRequest{IrisAppId: testApp, AccountId: account, Scopes: []string{"asset.view", "account.view"}})
			req.Header().Set("Authorization", "Bearer "+internalToken)
			resp, err := c.GetToken(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if !h.sim.ValidAccessToken(resp.Msg.GetAccessToken()) {
				t.Error("not a token Trackunit issued")
			}
		})
	}
}

func TestInternalAuth(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	account := uuid.NewString()
	h.install(account)
	body := `{"irisAppId":"` + testApp + `","accountId":"` + account + `"}`
	for name, bearer := range map[string]string{"missing": "", "wrong": "internal-token-for-testz", "admin token": adminToken} {
		status, m := h.getTokenJSON(bearer, body)
		if status != http.StatusUnauthorized || m["code"] != "unauthenticated" {
			t.Errorf("%s bearer: %d %v, want 401 unauthenticated", name, status, m)
		}
	}
	// The internal token does not open the admin service.
	if status, _ := testkit.PostJSON(t, h.internal.URL+"/irisx.broker.v1.InstallService/ListInstalls", `{}`, testkit.Bearer(internalToken)); status != http.StatusUnauthorized {
		t.Errorf("ListInstalls with the internal token: %d, want 401", status)
	}
	// The token API is not on the public listener.
	resp, err := http.Post(h.public.URL+"/irisx.broker.v1.TokenService/GetToken", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("token API on the public listener: %d, want 404", resp.StatusCode)
	}
}

func TestGetTokenErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	installed, uninstalled := uuid.NewString(), uuid.NewString()
	h.install(installed)
	h.install(uninstalled)
	h.sendEvent(trackunitsim.InstallEvent{Type: "UNINSTALLED", IrisAppID: testApp, AccountID: uninstalled})
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"unknown install", `{"irisAppId":"` + testApp + `","accountId":"` + uuid.NewString() + `"}`, 404, "not_found"},
		{"uninstalled", `{"irisAppId":"` + testApp + `","accountId":"` + uninstalled + `"}`, 400, "failed_precondition"},
		{"no irisAppId and no single allowed app", `{"accountId":"` + installed + `"}`, 400, "invalid_argument"},
		{"accountId not a UUID", `{"irisAppId":"` + testApp + `","accountId":"abc"}`, 400, "invalid_argument"},
		{"negative minValidSeconds", `{"irisAppId":"` + testApp + `","accountId":"` + installed + `","minValidSeconds":-1}`, 400, "invalid_argument"},
		{"minValidSeconds beyond any token's life", `{"irisAppId":"` + testApp + `","accountId":"` + installed + `","minValidSeconds":3601}`, 400, "invalid_argument"},
		{"scope Trackunit refuses", `{"irisAppId":"` + testApp + `","accountId":"` + installed + `","scopes":["not.a.scope"]}`, 400, "invalid_argument"},
		{"malformed JSON", `{"accountId":`, 400, "invalid_argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, m := h.getTokenJSON(internalToken, tc.body)
			if status != tc.status || m["code"] != tc.code {
				t.Errorf("got %d %v, want %d %s", status, m, tc.status, tc.code)
			}
		})
	}
	// A demand close to a token's whole life is met with a fresh token.
	if status, m := h.getTokenJSON(internalToken, `{"irisAppId":"`+testApp+`","accountId":"`+installed+`","minValidSeconds":3500}`); status != http.StatusOK {
		t.Errorf("minValidSeconds 3500: %d %v", status, m)
	}
	// invalid_scope marks nothing: the install still gets tokens.
	if tok := h.tokenFor(installed); !h.sim.ValidAccessToken(tok) {
		t.Error("the install stopped working after an invalid_scope")
	}
}

func TestGetTokenNoScopesAnywhere(t *testing.T) {
	h := newHarness(t, harnessOptions{config: func(c *config.Config) { c.DefaultScopes = nil }})
	account := uuid.NewString()
	h.install(account)
	status, m := h.getTokenJSON(internalToken, `{"irisAppId":"`+testApp+`","accountId":"`+account+`"}`)
	if status != http.StatusBadRequest || m["code"] != "invalid_argument" {
		t.Errorf("got %d %v, want invalid_argument", status, m)
	}
}

// Rejected credentials fail fast until a new INSTALLED arrives.
func TestGetTokenCredentialsRejected(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	account := uuid.NewString()
	clientID, _ := h.install(account)
	h.sim.RevokeClient(clientID)
	body := `{"irisAppId":"` + testApp + `","accountId":"` + account + `"}`
	status, m := h.getTokenJSON(internalToken, body)
	if status != http.StatusBadRequest || m["code"] != "failed_precondition" {
		t.Fatalf("revoked credentials: %d %v, want failed_precondition", status, m)
	}
	calls := h.sim.ClientCalls(clientID)
	for range 5 {
		if status, m := h.getTokenJSON(internalToken, body); m["code"] != "failed_precondition" {
			t.Fatalf("later call: %d %v", status, m)
		}
	}
	if got := h.sim.ClientCalls(clientID); got != calls {
		t.Errorf("rejected install made %d more upstream calls, want 0", got-calls)
	}
	var st string
	if err := h.pool.QueryRow(context.Background(), "SELECT status FROM installs WHERE account_id = $1", account).Scan(&st); err != nil || st != "credentials_rejected" {
		t.Errorf("install status = %q (%v), want credentials_rejected", st, err)
	}
	h.install(account)
	testkit.WaitFor(t, "tokens flowing after reinstall", func() bool {
		status, m := h.getTokenJSON(internalToken, body)
		return status == http.StatusOK && h.sim.ValidAccessToken(m["accessToken"].(string))
	})
}

// While Trackunit's auth server fails, a still-valid cached token is served;
// a token nobody has cached is unavailable.
func TestGetTokenDuringOutage(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	account := uuid.NewString()
	h.install(account)
	tok := h.tokenFor(account)
	h.sim.InjectFault(trackunitsim.EndpointAppToken, trackunitsim.Fault{Status: http.StatusServiceUnavailable})
	if again := h.tokenFor(account); again != tok {
		t.Error("the cached token was not served during the outage")
	}
	status, m := h.getTokenJSON(internalToken, `{"irisAppId":"`+testApp+`","accountId":"`+account+`","scopes":["account.view"]}`)
	if status != http.StatusServiceUnavailable || m["code"] != "unavailable" {
		t.Errorf("uncached during outage: %d %v, want 503 unavailable", status, m)
	}
	h.sim.ClearFaults()
	if status, _ := h.getTokenJSON(internalToken, `{"irisAppId":"`+testApp+`","accountId":"`+account+`","scopes":["account.view"]}`); status != http.StatusOK {
		t.Errorf("after recovery: %d", status)
	}
}

// A reinstall committed through one instance ends the cached tokens of
// another within a second, also after the other lost its LISTEN connection.
func TestReinstallEndsCachedTokensOnEveryInstance(t *testing.T) {
	a := newHarness(t, harnessOptions{})
	b := newHarnessOn(t, a)
	account := uuid.NewString()
	a.install(account)
	old := b.tokenFor(account)
	a.install(account) // new credentials; the simulator revokes the old ones
	testkit.WaitFor(t, "B to drop its cached token", func() bool { return b.tokenFor(account) != old })

	// Kill B's listening connection, then reinstall: the notification may be
	// lost, so B must flush its cache when it reconnects.
	current := b.tokenFor(account)
	if _, err := a.pool.Exec(context.Background(),
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'listen %' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	a.install(account)
	testkit.WaitFor(t, "B to drop its cached token after reconnecting", func() bool { return b.tokenFor(account) != current })
}

// The access tokens and client secrets never reach logs or error messages.
func TestTokenSecretsNotLogged(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	account := uuid.NewString()
	clientID, secret := h.install(account)
	tok := h.tokenFor(account)
	h.sim.InjectFault(trackunitsim.EndpointAppToken, trackunitsim.Fault{Status: http.StatusBadGateway, HTMLBody: true})
	_, m := h.getTokenJSON(internalToken, `{"irisAppId":"`+testApp+`","accountId":"`+account+`","scopes":["account.view"]}`)
	h.sim.ClearFaults()
	h.sim.RevokeClient(clientID)
	_, m2 := h.getTokenJSON(internalToken, `{"irisAppId":"`+testApp+`","accountId":"`+account+`","scopes":["asset.view","account.view"]}`)
	errs, _ := json.Marshal([]any{m, m2})
	logs := h.logs.String()
	if !strings.Contains(logs, "GetToken") {
		t.Fatal("no request was logged; the check would prove nothing")
	}
	for _, s := range []string{tok, clientID, secret.Reveal()} {
		if strings.Contains(logs, s) || strings.Contains(string(errs), s) {
			t.Errorf("a secret (%d chars) reached the logs or an error", len(s))
		}
	}
}
