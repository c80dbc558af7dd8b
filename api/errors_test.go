package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// logRecord is one JSON log line of the harness.
type logRecord struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	Code  string `json:"code"`
	Error string `json:"error"`
}

// rpcFailures returns the "rpc failed" log records written so far.
func (h *harness) rpcFailures() []logRecord {
	var out []logRecord
	for _, line := range strings.Split(h.logs.String(), "\n") {
		var r logRecord
		if json.Unmarshal([]byte(line), &r) == nil && r.Msg == "rpc failed" {
			out = append(out, r)
		}
	}
	return out
}

// connectCall posts a Connect JSON call and returns the status, the error
// code and message (empty on success).
func (h *harness) connectCall(path, bearerToken, body string) (int, string, string) {
	h.t.Helper()
	status, raw := testkit.PostJSON(h.t, h.internal.URL+path, body, testkit.Bearer(bearerToken))
	var e struct{ Code, Message string }
	_ = json.Unmarshal([]byte(raw), &e)
	return status, e.Code, e.Message
}

// TestErrorClassification checks that each failure is answered with the
// code that says what failed, a message naming the real cause, and the
// log level STYLE asks (error for ours or a dependency's, info for the
// caller's).
func TestErrorClassification(t *testing.T) {
	h, proxy := newProxiedHarness(t)
	const (
		getToken     = "/irisx.broker.v1.TokenService/GetToken"
		listInstalls = "/irisx.broker.v1.InstallService/ListInstalls"
	)
	lostKey, fresh := uuid.NewString(), uuid.NewString()
	h.install(lostKey)
	h.install(fresh)
	h.install(uuid.NewString())
	if _, err := h.pool.Exec(context.Background(), `UPDATE installs SET key_id = 'retired' WHERE account_id = $1`, lostKey); err != nil {
		t.Fatal(err)
	}
	_, _, firstPage := h.connectCall(listInstalls, adminToken, `{"pageSize":1}`)
	_ = firstPage

	cases := []struct {
		name, path, token, body string
		block                   bool
		status                  int
		code, message, level    string
	}{
		{name: "missing key id", path: getToken, token: internalToken,
			body:   `{"irisAppId":"` + testApp + `","accountId":"` + lostKey + `"}`,
			status: 500, code: "internal", message: "a stored credential cannot be decrypted with the configured ENCRYPTION_KEYS", level: "ERROR"},
		{name: "NUL byte in filter", path: listInstalls, token: adminToken, body: `{"irisAppId":"@acme/a\u0000b"}`,
			status: 400, code: "invalid_argument", message: "irisAppId must be @scope/name: printable ASCII without spaces, at most 214 characters", level: "INFO"},
		{name: "forged page token", path: listInstalls, token: adminToken,
			body:   `{"pageToken":"eyJhIjoiQGlyaXN4L3Rlc3QtYXBwIiwiYyI6IjAwMDAwMDAwLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMCJ9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`,
			status: 400, code: "invalid_argument", message: "pageToken is not one this service issued for these filters", level: "INFO"},
		{name: "unknown install", path: getToken, token: internalToken,
			body:   `{"irisAppId":"` + testApp + `","accountId":"` + uuid.NewString() + `"}`,
			status: 404, code: "not_found", message: "no such install", level: "INFO"},
		{name: "database down, GetToken", path: getToken, token: internalToken, block: true,
			body:   `{"irisAppId":"` + testApp + `","accountId":"` + fresh + `"}`,
			status: 503, code: "unavailable", message: "the database is unavailable; retry later", level: "ERROR"},
		{name: "database down, ListInstalls", path: listInstalls, token: adminToken, block: true, body: `{}`,
			status: 503, code: "unavailable", message: "the database is unavailable; retry later", level: "ERROR"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.block {
				proxy.Block()
			}
			before := len(h.rpcFailures())
			status, code, message := h.connectCall(c.path, c.token, c.body)
			if status != c.status || code != c.code || message != c.message {
				t.Errorf("answer %d %s %q, want %d %s %q", status, code, message, c.status, c.code, c.message)
			}
			logged := h.rpcFailures()[before:]
			if len(logged) != 1 || logged[0].Level != c.level || logged[0].Code != c.code {
				t.Errorf("logged %+v, want one %s record with code %s", logged, c.level, c.code)
			}
		})
	}

	// The callback reads the same table.
	status, body := h.post(h.sign(nil), installBody(t, installedFields(uuid.NewString())))
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"message":"the database is unavailable; retry later"`) {
		t.Errorf("callback with the database down: %d %s", status, body)
	}
}
