package trackunitsim

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

func TestControlSend(t *testing.T) {
	_, simSrv := newTestSim(t, Options{})
	rc, brokerSrv := newReceiver(t)
	c := &Client{BaseURL: simSrv.URL + "/"}
	ctx := testkit.Context(t)

	resp, err := c.Send(ctx, SendRequest{To: brokerSrv.URL + "/appinstall", IrisAppID: testApp, AccountID: testAccount})
	if err != nil {
		t.Fatal(err)
	}
	got := rc.last(t).Body
	secret, _ := got["clientSecret"].(string)
	if resp.Status != 200 || resp.Body != `{"status":"installed"}` || resp.ClientID != got["clientId"] {
		t.Errorf("Send = %+v, receiver got client %v", resp, got["clientId"])
	}
	if !regexp.MustCompile(`^0oa[A-Za-z0-9]{17}$`).MatchString(resp.ClientID) || len(secret) != 40 || got["type"] != "INSTALLED" {
		t.Errorf("generated credentials %q / %d chars, type %v", resp.ClientID, len(secret), got["type"])
	}
	if status, _, _ := postForm(t, simSrv.URL, "/apptoken", appTokenForm(resp.ClientID, secret, "asset.view"), nil); status != 200 {
		t.Errorf("generated credentials refused by /apptoken: %d", status)
	}

	// Given credentials are sent as they are, and the answer never holds
	// the secret.
	raw, err := json.Marshal(SendRequest{To: brokerSrv.URL, IrisAppID: testApp, AccountID: testAccount, ClientID: "0oaGiven", ClientSecret: "given-secret"})
	if err != nil {
		t.Fatal(err)
	}
	status, answer := testkit.PostJSON(t, simSrv.URL+"/sim/send", string(raw), nil)
	if status != 200 || strings.Contains(answer, "given-secret") || !strings.Contains(answer, `"clientId":"0oaGiven"`) {
		t.Errorf("/sim/send answered %d %s", status, answer)
	}
	if got := rc.last(t).Body; got["clientId"] != "0oaGiven" || got["clientSecret"] != "given-secret" {
		t.Errorf("receiver got %v", got)
	}

	for name, body := range map[string]string{
		"not json":     "{",
		"relative to":  `{"to":"/appinstall","irisAppId":"a","accountId":"b"}`,
		"ftp to":       `{"to":"ftp://x/","irisAppId":"a","accountId":"b"}`,
		"missing app":  `{"to":"http://127.0.0.1:1/","accountId":"b"}`,
		"missing acct": `{"to":"http://127.0.0.1:1/","irisAppId":"a"}`,
	} {
		if status, answer := testkit.PostJSON(t, simSrv.URL+"/sim/send", body, nil); status != 400 {
			t.Errorf("%s: %d %s, want 400", name, status, answer)
		}
	}
	brokerSrv.Close()
	if _, err := c.Send(ctx, SendRequest{To: brokerSrv.URL, IrisAppID: testApp, AccountID: testAccount}); err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("send to a closed broker: err = %v, want a 502", err)
	}
}

func TestControlRotateRevokeFaultsStats(t *testing.T) {
	s, simSrv := newTestSim(t, Options{})
	c := &Client{BaseURL: simSrv.URL}
	ctx := testkit.Context(t)
	s.AddClient("0oaX", "sec", nil)
	form := appTokenForm("0oaX", "sec", "asset.view")

	kid, err := c.Rotate(ctx, "ES256")
	if err != nil || kid != s.SigningKID() || !strings.HasPrefix(kid, "es256-") {
		t.Errorf("Rotate = %q %v, signing %q", kid, err, s.SigningKID())
	}
	if _, err := c.Rotate(ctx, "HS256"); err == nil {
		t.Error("Rotate(HS256) succeeded")
	}

	if err := c.InjectFault(ctx, FaultRequest{Endpoint: EndpointAppToken, Status: 503, RetryAfter: "1", Times: 1}); err != nil {
		t.Fatal(err)
	}
	status, hdr, _ := postForm(t, simSrv.URL, "/apptoken", form, nil)
	if status != 503 || hdr.Get("Retry-After") != "1" {
		t.Errorf("after fault: %d Retry-After %q", status, hdr.Get("Retry-After"))
	}
	for name, f := range map[string]FaultRequest{
		"endpoint": {Endpoint: "admin", Status: 500},
		"latency":  {Endpoint: EndpointToken, Latency: "soon"},
		"status":   {Endpoint: EndpointToken, Status: 42},
		"times":    {Endpoint: EndpointToken, Times: -1},
	} {
		if err := c.InjectFault(ctx, f); err == nil {
			t.Errorf("bad %s accepted", name)
		}
	}
	if err := c.InjectFault(ctx, FaultRequest{Endpoint: EndpointAppToken, Latency: "1ms", ErrorCode: "invalid_scope"}); err != nil {
		t.Fatal(err)
	}
	if status, _, body := postForm(t, simSrv.URL, "/apptoken", form, nil); status != 400 || body["error"] != "invalid_scope" {
		t.Errorf("error-code fault: %d %v", status, body)
	}
	if err := c.ClearFaults(ctx); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := postForm(t, simSrv.URL, "/apptoken", form, nil); status != 200 {
		t.Errorf("after clear: %d", status)
	}

	if err := c.Revoke(ctx, "0oaX"); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := postForm(t, simSrv.URL, "/apptoken", form, nil); status != 401 {
		t.Errorf("after revoke: %d, want 401", status)
	}
	if err := c.Revoke(ctx, ""); err == nil {
		t.Error("revoke without client id succeeded")
	}

	if err := c.AddUser(ctx, UserRequest{Username: "dev", Password: "dev-pw", ClientID: "0oaDev", ClientSecret: "dev-cs"}); err != nil {
		t.Fatal(err)
	}
	if status, _, body := postForm(t, simSrv.URL, "/token", passwordForm("dev", "dev-pw", "api"), []string{"0oaDev", "dev-cs"}); status != 200 {
		t.Errorf("user added through the control API: /token %d %v", status, body)
	}
	if err := c.AddUser(ctx, UserRequest{Username: "dev", ClientID: "0oaDev"}); err == nil {
		t.Error("AddUser without secrets succeeded")
	}

	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{
		Calls:       map[string]int{"apptoken": 4, "token": 1},
		ClientCalls: map[string]int{"0oaX": 4},
		UserCalls:   map[string]map[string]int{"dev": {"password": 1}},
		SigningKID:  kid,
		KIDs:        s.KIDs(),
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}
