package trackunitsim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// received is one callback as the receiver saw it.
type received struct {
	Method, Path, ContentType, Identity string
	Body                                map[string]any
}

// receiver is a stand-in broker that records callbacks.
type receiver struct {
	mu  sync.Mutex
	got []received
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	t.Helper()
	rc := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get(IdentityHeader), body})
		rc.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"installed"}`)
	}))
	t.Cleanup(srv.Close)
	return rc, srv
}

func (rc *receiver) last(t *testing.T) received {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.got) == 0 {
		t.Fatal("no callback received")
	}
	return rc.got[len(rc.got)-1]
}

const (
	testApp     = "@org/app"
	testAccount = "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"
)

func TestSendInstall(t *testing.T) {
	clock := newClock()
	s, simSrv := newTestSim(t, Options{Now: clock.Now})
	rc, brokerSrv := newReceiver(t)
	ctx := testkit.Context(t)

	ev := InstallEvent{Type: EventInstalled, IrisAppID: testApp, AccountID: testAccount, ClientID: "0oaFirst", ClientSecret: "first-secret"}
	status, body, err := s.SendInstall(ctx, brokerSrv.URL+"/appinstall", ev, "")
	if err != nil || status != 200 || string(body) != `{"status":"installed"}` {
		t.Fatalf("SendInstall = %d %s %v", status, body, err)
	}
	got := rc.last(t)
	identity := got.Identity
	got.Identity = ""
	want := received{
		Method: "POST", Path: "/appinstall", ContentType: "application/json",
		Body: map[string]any{"type": "INSTALLED", "irisAppId": testApp, "accountId": testAccount, "clientId": "0oaFirst", "clientSecret": "first-secret"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("callback (-want +got):\n%s", diff)
	}
	tok, err := jwt.Parse([]byte(identity), jwt.WithKeySet(fetchJWKS(t, simSrv.URL+"/api/marketplace/jwks")),
		jwt.WithClock(jwt.ClockFunc(clock.Now)),
		jwt.WithClaimValue("accountId", testAccount), jwt.WithClaimValue("irisAppId", testApp))
	if err != nil {
		t.Fatalf("identity header does not verify: %v", err)
	}
	if tok.JwtID() == "" {
		t.Error("identity has no jti")
	}

	// The credentials now work at /apptoken.
	if status, _, _ := postForm(t, simSrv.URL, "/apptoken", appTokenForm("0oaFirst", "first-secret", "asset.view"), nil); status != 200 {
		t.Errorf("installed credentials: /apptoken status %d, want 200", status)
	}

	// New credentials replace the old ones.
	ev.ClientID, ev.ClientSecret = "0oaSecond", "second-secret"
	if _, _, err := s.SendInstall(ctx, brokerSrv.URL+"/appinstall", ev, "explicit-identity"); err != nil {
		t.Fatal(err)
	}
	if got := rc.last(t).Identity; got != "explicit-identity" {
		t.Errorf("identity header = %q, want the explicit one", got)
	}
	for _, c := range []struct {
		id, secret string
		want       int
	}{{"0oaFirst", "first-secret", 401}, {"0oaSecond", "second-secret", 200}} {
		if status, _, _ := postForm(t, simSrv.URL, "/apptoken", appTokenForm(c.id, c.secret, "asset.view"), nil); status != c.want {
			t.Errorf("after reinstall %s: status %d, want %d", c.id, status, c.want)
		}
	}
	if id, ok := s.InstallClient(testApp, testAccount); !ok || id != "0oaSecond" {
		t.Errorf("InstallClient = %q %v, want 0oaSecond", id, ok)
	}

	// UNINSTALLED revokes the install's credentials.
	if _, _, err := s.SendInstall(ctx, brokerSrv.URL+"/appinstall", InstallEvent{Type: EventUninstalled, IrisAppID: testApp, AccountID: testAccount}, ""); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]any{"type": "UNINSTALLED", "irisAppId": testApp, "accountId": testAccount}, rc.last(t).Body); diff != "" {
		t.Errorf("uninstall body (-want +got):\n%s", diff)
	}
	if status, _, _ := postForm(t, simSrv.URL, "/apptoken", appTokenForm("0oaSecond", "second-secret", "asset.view"), nil); status != 401 {
		t.Errorf("after uninstall: status %d, want 401", status)
	}
	if _, ok := s.InstallClient(testApp, testAccount); ok {
		t.Error("install still registered after UNINSTALLED")
	}
}

func TestSendInstallUnreachable(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	_, brokerSrv := newReceiver(t)
	url := brokerSrv.URL
	brokerSrv.Close()
	if _, _, err := s.SendInstall(testkit.Context(t), url, InstallEvent{Type: EventInstalled}, ""); err == nil {
		t.Error("SendInstall to a closed server succeeded")
	}
}
