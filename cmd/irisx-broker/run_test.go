package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

func mapEnv(m map[string]string) env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// started runs the program in the background until the test ends and
// returns its output buffers and a channel with its result.
func started(t *testing.T, args []string, e map[string]string) (stdout, stderr *testkit.Buffer, result chan error, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr, result = &testkit.Buffer{}, &testkit.Buffer{}, make(chan error, 1)
	go func() { result <- run(ctx, args, mapEnv(e), strings.NewReader(""), stdout, stderr) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-result:
			result <- err
		case <-time.After(20 * time.Second):
			t.Error("the program did not stop within 20 s of its context ending")
		}
	}
	t.Cleanup(stop)
	return stdout, stderr, result, stop
}

func waitMatch(t *testing.T, buf *testkit.Buffer, re *regexp.Regexp, result chan error) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(buf.String()); m != nil {
			return m
		}
		select {
		case err := <-result:
			result <- err // for stop, which waits for it
			t.Fatalf("the program ended early: %v\n%s", err, buf.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no %s in output:\n%s", re, buf.String())
	return nil
}

func TestServeRefusesBadConfigNamingEveryVariable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"irisx-broker", "serve"},
		mapEnv(map[string]string{"ENCRYPTION_KEYS": "k1:dG9vLXNob3J0", "IDENTITY_LEEWAY": "soon"}),
		strings.NewReader(""), &stdout, &stderr)
	if err == nil {
		t.Fatal("serve started without its required configuration")
	}
	for _, name := range []string{"DATABASE_URL", "ENCRYPTION_KEYS", "INTERNAL_API_TOKENS", "ADMIN_API_TOKENS", "IDENTITY_LEEWAY"} {
		if !strings.Contains(stderr.String(), name) {
			t.Errorf("message does not name %s:\n%s", name, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), "dG9vLXNob3J0") {
		t.Error("the message printed the key")
	}
}

func TestKeysGenerate(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"irisx-broker", "keys", "generate", "--id", "k2"}, mapEnv(nil), nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^k2:[A-Za-z0-9+/]{43}=\n$`).MatchString(out.String()) {
		t.Errorf("keys generate printed %q", out.String())
	}
}

func TestMigrateCommands(t *testing.T) {
	dbURL := testdb.NewDatabase(t)
	e := mapEnv(map[string]string{"DATABASE_URL": dbURL})
	var out bytes.Buffer
	for _, args := range [][]string{{"version"}, {"down", "1"}, {"version"}, {"up"}} {
		out.Reset()
		if err := run(context.Background(), append([]string{"irisx-broker", "migrate"}, args...), e, nil, &out, io.Discard); err != nil {
			t.Fatalf("migrate %v: %v", args, err)
		}
		t.Logf("migrate %v: %s", args, strings.TrimSpace(out.String()))
	}
	if !strings.HasPrefix(out.String(), "version ") || strings.Contains(out.String(), "dirty") || strings.HasPrefix(out.String(), "version 0") {
		t.Errorf("after up: %q", out.String())
	}
}

// The dev loop of the README: install through the simulator, get a token,
// list installs, using only what `dev` printed.
func TestDevLoop(t *testing.T) {
	dbURL := testdb.NewDatabase(t)
	stateDir := t.TempDir()
	stdout, stderr, result, stop := started(t,
		[]string{"irisx-broker", "dev", "--sim-addr", "127.0.0.1:0", "--state-dir", stateDir},
		map[string]string{"DATABASE_URL": dbURL, "PUBLIC_ADDR": "127.0.0.1:0", "INTERNAL_ADDR": "127.0.0.1:0"})
	m := waitMatch(t, stdout, regexp.MustCompile(`public listener: +http://(\S+) [\s\S]*internal listener: +http://(\S+) [\s\S]*Trackunit simulator: (\S+)`), result)
	public, internal, sim := m[1], m[2], m[3]
	waitFor200(t, "http://"+public+"/readyz")

	account := uuid.NewString()
	body := post(t, sim+"/sim/send", "", `{"to":"http://`+public+`/appinstall","type":"INSTALLED","irisAppId":"@irisx/dev-app","accountId":"`+account+`"}`)
	if !strings.Contains(body, `installed`) {
		t.Fatalf("install: %s", body)
	}
	body = post(t, "http://"+internal+"/irisx.broker.v1.TokenService/GetToken", devInternalToken, `{"accountId":"`+account+`"}`)
	var tok struct{ AccessToken, ExpiresAt string }
	if err := json.Unmarshal([]byte(body), &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("GetToken: %s", body)
	}
	body = post(t, "http://"+internal+"/irisx.broker.v1.InstallService/ListInstalls", devAdminToken, `{}`)
	if !strings.Contains(body, account) {
		t.Fatalf("ListInstalls does not list the install: %s", body)
	}
	if strings.Contains(stderr.String(), tok.AccessToken) {
		t.Error("the access token was logged")
	}

	// The printed API-user commands work as printed.
	m = waitMatch(t, stdout, regexp.MustCompile(`printf '%s\\n%s\\n' (\S+) (\S+) \| IRISX_ADMIN_TOKEN=(\S+) \\\n\s+go run ./cmd/irisx-broker api-users add --server (\S+) --name dev --username (\S+) --client-id (\S+)`), result)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"irisx-broker", "api-users", "add", "--server", m[4], "--name", "dev", "--username", m[5], "--client-id", m[6]},
		mapEnv(map[string]string{"IRISX_ADMIN_TOKEN": m[3]}), strings.NewReader(m[1]+"\n"+m[2]+"\n"), &out, io.Discard); err != nil {
		t.Fatalf("api-users add: %v", err)
	}
	body = post(t, "http://"+internal+"/irisx.broker.v1.TokenService/GetApiUserToken", devInternalToken, `{"name":"dev"}`)
	if !strings.Contains(body, `"accessToken"`) {
		t.Fatalf("GetApiUserToken: %s", body)
	}
	stop()
	if err := <-result; err != nil {
		t.Errorf("dev ended with %v", err)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "encryption-key")); err != nil {
		t.Errorf("dev key not kept: %v", err)
	}
}

func waitFor200(t *testing.T, url string) {
	t.Helper()
	testkit.WaitFor(t, url+" to answer 200", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func post(t *testing.T, url, bearer, body string) string {
	t.Helper()
	_, answer := testkit.PostJSON(t, url, body, testkit.Bearer(bearer))
	return answer
}
