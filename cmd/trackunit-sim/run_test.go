package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// output is a concurrency-safe writer that also hands out complete lines.
type output struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	part  string
	lines chan string
}

func newOutput() *output { return &output{lines: make(chan string, 100)} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	o.part += string(p)
	for {
		i := strings.IndexByte(o.part, '\n')
		if i < 0 {
			break
		}
		select {
		case o.lines <- o.part[:i]:
		default: // nobody listens any more
		}
		o.part = o.part[i+1:]
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

func noEnv(string) string { return "" }

// startServe runs `trackunit-sim serve` with args and returns its base URL;
// the server stops (and must stop cleanly) at the end of the test.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := newOutput(), newOutput()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, append([]string{"trackunit-sim", "serve", "--addr", "127.0.0.1:0"}, args...), noEnv, stdout, stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("serve returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop after its context ended")
		}
	})
	re := regexp.MustCompile(`listening on (http://\S+)`)
	wait := testkit.Context(t)
	for {
		select {
		case line := <-stdout.lines:
			if m := re.FindStringSubmatch(line); m != nil {
				return m[1]
			}
		case err := <-errc:
			t.Fatalf("serve ended early: %v\n%s", err, stderr.String())
		case <-wait.Done():
			t.Fatal("serve never printed its address")
		}
	}
}

// runCmd runs one short command and returns its stdout.
func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	stdout, stderr := newOutput(), newOutput()
	err := run(testkit.Context(t), append([]string{"trackunit-sim"}, args...), noEnv, stdout, stderr)
	if err != nil {
		t.Logf("%v: stderr: %s", args, stderr.String())
	}
	return stdout.String(), err
}

// broker is a stand-in callback receiver that checks each callback's
// identity JWT against the simulator's served JWKS and the body against the
// contract's shape.
type broker struct {
	mu      sync.Mutex
	bodies  []map[string]any
	failure []string
}

func newBroker(t *testing.T, simURL string) (*broker, *httptest.Server) {
	t.Helper()
	b := &broker{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(msg string) {
			b.mu.Lock()
			b.failure = append(b.failure, msg)
			b.mu.Unlock()
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid_identity","message":"`+msg+`"}`)
		}
		set, err := jwk.Fetch(r.Context(), simURL+"/api/marketplace/jwks")
		if err != nil {
			fail("jwks: " + err.Error())
			return
		}
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(raw, &body); err != nil {
			fail("body not JSON")
			return
		}
		_, err = jwt.Parse([]byte(r.Header.Get("Trackunit-Identity")), jwt.WithKeySet(set),
			jwt.WithClaimValue("accountId", body["accountId"]), jwt.WithClaimValue("irisAppId", body["irisAppId"]))
		if err != nil {
			fail("identity: " + err.Error())
			return
		}
		b.mu.Lock()
		b.bodies = append(b.bodies, body)
		b.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"installed"}`)
	}))
	t.Cleanup(srv.Close)
	return b, srv
}

func (b *broker) last(t *testing.T) map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.failure) > 0 {
		t.Fatalf("broker refused callbacks: %v", b.failure)
	}
	if len(b.bodies) == 0 {
		t.Fatal("broker got no callback")
	}
	return b.bodies[len(b.bodies)-1]
}

func keysOf(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func postForm(t *testing.T, u string, form url.Values) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(testkit.Context(t), http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

const (
	app     = "@org/app"
	account = "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"
)

func TestServeAndSend(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "sim-keys.json")
	simURL := startServe(t, "--keys", keys)
	if fi, err := os.Stat(keys); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want created with mode 0600", fi, err)
	}
	b, brokerSrv := newBroker(t, simURL)
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("cli-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// send --sim: the running simulator signs, sends and learns the credentials.
	out, err := runCmd(t, "send", "--to", brokerSrv.URL+"/appinstall", "--app", app, "--account", account,
		"--client-id", "0oaCLI", "--client-secret-file", secretFile, "--sim", simURL)
	if err != nil {
		t.Fatalf("send --sim: %v", err)
	}
	if want := "HTTP 200\n{\"status\":\"installed\"}\n"; out != want {
		t.Errorf("send output = %q, want %q", out, want)
	}
	want := map[string]any{"type": "INSTALLED", "irisAppId": app, "accountId": account, "clientId": "0oaCLI", "clientSecret": "cli-secret-value"}
	if diff := cmp.Diff(want, b.last(t)); diff != "" {
		t.Errorf("callback body (-want +got):\n%s", diff)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"0oaCLI"}, "client_secret": {"cli-secret-value"}, "scope": {"asset.view"}}
	if status, _ := postForm(t, simURL+"/apptoken", form); status != 200 {
		t.Errorf("/apptoken with the sent credentials: %d, want 200", status)
	}

	// send --keys: signed locally with the same key file, credentials generated.
	if _, err := runCmd(t, "send", "--to", brokerSrv.URL+"/appinstall", "--app", app, "--account", account, "--keys", keys); err != nil {
		t.Fatalf("send --keys: %v", err)
	}
	got := b.last(t)
	if diff := cmp.Diff([]string{"accountId", "clientId", "clientSecret", "irisAppId", "type"}, keysOf(got)); diff != "" {
		t.Errorf("generated callback members (-want +got):\n%s", diff)
	}
	if id, _ := got["clientId"].(string); !strings.HasPrefix(id, "0oa") || id == "0oaCLI" {
		t.Errorf("generated client id %q", id)
	}

	// fault, then clear.
	if _, err := runCmd(t, "fault", "--sim", simURL, "--endpoint", "apptoken", "--status", "503", "--retry-after", "2", "--times", "1"); err != nil {
		t.Fatal(err)
	}
	if status, hdr := postForm(t, simURL+"/apptoken", form); status != 503 || hdr.Get("Retry-After") != "2" {
		t.Errorf("after fault: %d Retry-After %q, want 503 and 2", status, hdr.Get("Retry-After"))
	}
	if _, err := runCmd(t, "fault", "--sim", simURL, "--error-code", "invalid_client"); err != nil {
		t.Fatal(err)
	}
	if status, _ := postForm(t, simURL+"/apptoken", form); status != 401 {
		t.Errorf("invalid_client fault: %d, want 401", status)
	}
	if _, err := runCmd(t, "fault", "--sim", simURL, "--clear"); err != nil {
		t.Fatal(err)
	}
	if status, _ := postForm(t, simURL+"/apptoken", form); status != 200 {
		t.Errorf("after --clear: %d, want 200", status)
	}

	// rotate: the new key is served beside the old one and signs from now on.
	out, err = runCmd(t, "rotate", "--sim", simURL, "--kind", "ES256")
	if err != nil {
		t.Fatal(err)
	}
	kid := strings.TrimSpace(out)
	set, err := jwk.Fetch(testkit.Context(t), simURL+"/jwks")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := set.LookupKeyID(kid); !ok || set.Len() != 2 {
		t.Errorf("after rotate: %d keys, new kid %q found %v", set.Len(), kid, ok)
	}
	if _, err := runCmd(t, "send", "--to", brokerSrv.URL, "--app", app, "--account", account, "--sim", simURL); err != nil {
		t.Errorf("send after rotate: %v", err)
	}

	// revoke, user and stats.
	if _, err := runCmd(t, "revoke", "--sim", simURL, "--client-id", "0oaCLI"); err != nil {
		t.Fatal(err)
	}
	if status, _ := postForm(t, simURL+"/apptoken", form); status != 401 {
		t.Errorf("after revoke: %d, want 401", status)
	}
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("user-pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd(t, "user", "--sim", simURL, "--username", "api-user", "--client-id", "0oaUser",
		"--password-file", pwFile, "--client-secret-file", secretFile); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(testkit.Context(t), http.MethodPost, simURL+"/token",
		strings.NewReader(url.Values{"grant_type": {"password"}, "username": {"api-user"}, "password": {"user-pw"}, "scope": {"api"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("0oaUser", "cli-secret-value")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/token for the registered user: %d", resp.StatusCode)
	}
	out, err = runCmd(t, "stats", "--sim", simURL)
	if err != nil {
		t.Fatal(err)
	}
	var st trackunitsim.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats output %q: %v", out, err)
	}
	if st.Calls["apptoken"] != 5 || st.ClientCalls["0oaCLI"] != 5 || st.UserCalls["api-user"]["password"] != 1 || st.SigningKID != kid {
		t.Errorf("stats = %+v", st)
	}
}

func TestServeLoadsExistingKeys(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	sim, err := trackunitsim.New(trackunitsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.SaveKeys(keys); err != nil {
		t.Fatal(err)
	}
	simURL := startServe(t, "--keys", keys)
	set, err := jwk.Fetch(testkit.Context(t), simURL+"/api/marketplace/jwks")
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := set.Key(0); !ok || set.Len() != 1 || k.KeyID() != sim.SigningKID() {
		t.Errorf("served %d keys, want only %s", set.Len(), sim.SigningKID())
	}
}

func TestSendReportsBrokerRefusal(t *testing.T) {
	simURL := startServe(t)
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"error":"app_not_allowed"}`)
	}))
	defer refusing.Close()
	out, err := runCmd(t, "send", "--to", refusing.URL, "--app", app, "--account", account, "--sim", simURL)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("err = %v, want the 403 reported", err)
	}
	if out != "HTTP 403\n{\"error\":\"app_not_allowed\"}\n" {
		t.Errorf("output = %q", out)
	}
}

func TestRunUsageErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"send", "--to", "http://127.0.0.1:1/appinstall", "--app", app, "--account", account}
	tests := []struct {
		name string
		args []string
	}{
		{"no command", nil},
		{"unknown command", []string{"explode"}},
		{"unknown flag", []string{"serve", "--port", "1"}},
		{"stray argument", []string{"rotate", "--sim", "http://x", "extra"}},
		{"send without --to", []string{"send", "--app", app, "--account", account, "--sim", "http://x"}},
		{"send relative --to", []string{"send", "--to", "/appinstall", "--app", app, "--account", account, "--sim", "http://x"}},
		{"send with neither --sim nor --keys", base},
		{"send empty secret file", append(append([]string{}, base...), "--keys", "k", "--client-secret-file", empty)},
		{"send missing key file", append(append([]string{}, base...), "--keys", filepath.Join(dir, "none"))},
		{"fault with nothing", []string{"fault", "--sim", "http://x"}},
		{"fault without sim", []string{"fault", "--status", "503"}},
		{"revoke without client", []string{"revoke", "--sim", "http://x"}},
		{"user without files", []string{"user", "--sim", "http://x", "--username", "u", "--client-id", "c"}},
		{"serve bad address", []string{"serve", "--addr", "256.0.0.1:bad"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := runCmd(t, tc.args...); err == nil {
				t.Errorf("run(%q) succeeded, want an error", tc.args)
			}
		})
	}
	if out, err := runCmd(t, "help"); err != nil || !strings.Contains(out, "usage: trackunit-sim") {
		t.Errorf("help: %v %q", err, out)
	}
	if _, err := runCmd(t, "send", "-h"); err != nil {
		t.Errorf("send -h: %v, want nil", err)
	}
}

func TestSimURLFromEnvironment(t *testing.T) {
	simURL := startServe(t)
	stdout, stderr := newOutput(), newOutput()
	getenv := func(k string) string {
		if k == "TRACKUNIT_SIM_URL" {
			return simURL
		}
		return ""
	}
	if err := run(testkit.Context(t), []string{"trackunit-sim", "rotate", "--kind", "EdDSA"}, getenv, stdout, stderr); err != nil {
		t.Fatalf("rotate with $TRACKUNIT_SIM_URL: %v (%s)", err, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "eddsa-") {
		t.Errorf("output %q, want the new kid", stdout.String())
	}
}

// Without --sim or $TRACKUNIT_SIM_URL the control commands look for the
// simulator where `serve` listens by default, so the contract's bare
// `trackunit-sim send --to URL --app ID --account ID` works.
func TestSimFlagDefault(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		want string
	}{
		"default":  {nil, "http://127.0.0.1:8090"},
		"from env": {map[string]string{"TRACKUNIT_SIM_URL": "http://127.0.0.1:9999"}, "http://127.0.0.1:9999"},
	} {
		e := env{getenv: func(k string) string { return tc.env[k] }, stdout: io.Discard, stderr: io.Discard}
		set := e.flags("send")
		sim := simFlag(e, set)
		if err := set.Parse(nil); err != nil {
			t.Fatal(err)
		}
		if *sim != tc.want {
			t.Errorf("%s: --sim = %q, want %q", name, *sim, tc.want)
		}
	}
}
