package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// startServe runs `serve` against a fresh database and the simulator and
// returns the public and internal base URLs.
func startServe(t *testing.T, sim *trackunitsim.Sim, extra map[string]string) (public, internal string) {
	t.Helper()
	public, internal, _, _ = startServeLogged(t, sim, extra)
	return public, internal
}

// startServeLogged is startServe that also returns serve's stderr and a
// stop that returns once serve has.
func startServeLogged(t *testing.T, sim *trackunitsim.Sim, extra map[string]string) (public, internal string, stderr *testkit.Buffer, stop func()) {
	t.Helper()
	simSrv := httptest.NewServer(sim.Handler())
	t.Cleanup(simSrv.Close)
	e := map[string]string{
		"DATABASE_URL":        testdb.NewDatabase(t),
		"PUBLIC_ADDR":         "127.0.0.1:0",
		"INTERNAL_ADDR":       "127.0.0.1:0",
		"ENCRYPTION_KEYS":     testkit.KeySpec,
		"INTERNAL_API_TOKENS": "internal-token-for-tests",
		"ADMIN_API_TOKENS":    "admin-token-for-tests",
		"TRACKUNIT_JWKS_URL":  simSrv.URL + "/api/marketplace/jwks",
		"TRACKUNIT_AUTH_URL":  simSrv.URL,
		"DEFAULT_SCOPES":      "asset.view",
	}
	for k, v := range extra {
		e[k] = v
	}
	_, stderr, result, stop := started(t, []string{"irisx-broker", "serve"}, e)
	m := waitMatch(t, stderr, regexp.MustCompile(`"public_addr":"([^"]+)","internal_addr":"([^"]+)"`), result)
	public, internal = "http://"+m[1], "http://"+m[2]
	waitFor200(t, public+"/readyz")
	return public, internal, stderr, stop
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// value is the value of the counter or gauge name{labels}, 0 when absent.
func value(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f := families[name]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return 0
}

// After a scripted sequence the scraped counters have the expected values.
func TestMetricsAfterScriptedSequence(t *testing.T) {
	sim, err := trackunitsim.New(trackunitsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	public, internal := startServe(t, sim, nil)
	account := uuid.NewString()
	clientID, secret := trackunitsim.NewClientCredentials()
	status, body, err := sim.SendInstall(context.Background(), public+"/appinstall",
		trackunitsim.InstallEvent{Type: "INSTALLED", IrisAppID: "@irisx/m", AccountID: account, ClientID: clientID, ClientSecret: secret}, "")
	if err != nil || status != 200 {
		t.Fatalf("install: %d %s %v", status, body, err)
	}
	req, _ := http.NewRequest(http.MethodPost, public+"/appinstall", strings.NewReader(`{}`))
	req.Header.Set("Trackunit-Identity", "not-a-jwt")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tokenBody := fmt.Sprintf(`{"irisAppId":"@irisx/m","accountId":%q}`, account)
	first := post(t, internal+"/irisx.broker.v1.TokenService/GetToken", "internal-token-for-tests", tokenBody)
	second := post(t, internal+"/irisx.broker.v1.TokenService/GetToken", "internal-token-for-tests", tokenBody)
	if !strings.Contains(first, "accessToken") || first != second {
		t.Fatalf("tokens: %s / %s", first, second)
	}

	f := scrape(t, internal)
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"irisx_install_events_total", map[string]string{"type": "INSTALLED", "outcome": "installed"}, 1},
		{"irisx_identity_failures_total", map[string]string{"reason": "malformed"}, 1},
		{"irisx_token_cache_total", map[string]string{"result": "miss", "kind": "install"}, 1},
		{"irisx_token_cache_total", map[string]string{"result": "hit", "kind": "install"}, 1},
		{"irisx_upstream_requests_total", map[string]string{"endpoint": "apptoken", "outcome": "ok"}, 1},
		{"irisx_http_requests_total", map[string]string{"listener": "public", "route": "/appinstall", "code": "200"}, 1},
		{"irisx_http_requests_total", map[string]string{"listener": "public", "route": "/appinstall", "code": "401"}, 1},
		{"irisx_jwks_fetches_total", map[string]string{"outcome": "ok"}, 1},
		{"irisx_installs", map[string]string{"status": "installed"}, 1},
	}
	for _, c := range checks {
		if got := value(f, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Low cardinality: no account or app id in any label.
	resp, err = http.Get(internal + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{account, "@irisx/m", clientID, secret.Reveal()} {
		if strings.Contains(string(raw), s) {
			t.Errorf("/metrics contains %q", s)
		}
	}
}

// A megabyte of dots in the identity header is the verifier's 401, not the
// HTTP server's 431, and nothing is stored.
func TestServeHugeIdentityHeader(t *testing.T) {
	sim, err := trackunitsim.New(trackunitsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	public, internal := startServe(t, sim, nil)
	req, _ := http.NewRequest(http.MethodPost, public+"/appinstall", strings.NewReader(`{}`))
	req.Header.Set("Trackunit-Identity", strings.Repeat(".", 1<<20))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("1 MB identity header: %d, want 401", resp.StatusCode)
	}
	if got := value(scrape(t, internal), "irisx_identity_failures_total", map[string]string{"reason": "too_large"}); got != 1 {
		t.Errorf("too_large failures = %v, want 1", got)
	}
}
