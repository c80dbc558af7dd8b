package api_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

func (h *harness) sign(claims trackunitsim.Claims) string {
	h.t.Helper()
	tok, err := h.sim.SignIdentity(claims)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// Bad bodies get the right status and nothing is stored.
func TestInstallBadBodies(t *testing.T) {
	h := newHarness(t, harnessOptions{allowedApps: []string{testApp, "@irisx/other"}})
	account := uuid.NewString()
	without := func(field string) map[string]any {
		f := installedFields(account)
		delete(f, field)
		return f
	}
	with := func(field string, v any) map[string]any {
		f := installedFields(account)
		f[field] = v
		return f
	}
	cases := []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"over 64 KiB", installBody(t, with("padding", strings.Repeat("x", 64<<10))), 413, "payload_too_large"},
		{"not JSON", []byte("type=INSTALLED"), 400, "invalid_request"},
		{"JSON array", []byte(`[1,2]`), 400, "invalid_request"},
		{"truncated JSON", installBody(t, installedFields(account))[:40], 400, "invalid_request"},
		{"missing type", installBody(t, without("type")), 400, "invalid_request"},
		{"missing irisAppId", installBody(t, without("irisAppId")), 400, "invalid_request"},
		{"missing accountId", installBody(t, without("accountId")), 400, "invalid_request"},
		{"accountId not a UUID", installBody(t, with("accountId", "12345")), 400, "invalid_request"},
		{"accountId a URN", installBody(t, with("accountId", "urn:uuid:"+account)), 400, "invalid_request"},
		{"accountId a number", installBody(t, with("accountId", 42)), 400, "invalid_request"},
		{"INSTALLED without clientId", installBody(t, without("clientId")), 400, "invalid_request"},
		{"INSTALLED without clientSecret", installBody(t, without("clientSecret")), 400, "invalid_request"},
		{"INSTALLED with empty clientSecret", installBody(t, with("clientSecret", "")), 400, "invalid_request"},
		{"app not allowed", installBody(t, with("irisAppId", "@evil/app")), 403, "app_not_allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The identity is valid, so each failure is the body's.
			status, resp := h.post(h.sign(nil), tc.body)
			if status != tc.status {
				t.Fatalf("status = %d (%s), want %d", status, resp, tc.status)
			}
			var e struct{ Error, Message string }
			if err := json.Unmarshal([]byte(resp), &e); err != nil || e.Error != tc.code || e.Message == "" {
				t.Errorf("body = %s, want error %q with a message", resp, tc.code)
			}
			if strings.Contains(resp, "s3cret-") {
				t.Errorf("error body echoes the secret: %s", resp)
			}
			h.assertNothingStored()
		})
	}
}

// The size check comes first: an oversized body with a bad identity is 413.
func TestInstallCheckOrder(t *testing.T) {
	h := newHarness(t, harnessOptions{allowedApps: []string{testApp}})
	big := installBody(t, map[string]any{"padding": strings.Repeat("x", 70<<10)})
	if status, _ := h.post("garbage", big); status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized with bad identity: %d, want 413", status)
	}
	if status, _ := h.post("garbage", []byte("not json")); status != http.StatusUnauthorized {
		t.Errorf("bad identity and bad body: %d, want 401", status)
	}
	f := installedFields(uuid.NewString())
	f["irisAppId"] = "@evil/app"
	delete(f, "clientSecret")
	if status, _ := h.post(h.sign(nil), installBody(t, f)); status != http.StatusBadRequest {
		t.Errorf("bad body and app not allowed: %d, want 400", status)
	}
	h.assertNothingStored()
}

type storedInstall struct {
	Status  string
	HasCred bool
	Events  []string // type/outcome, oldest first
}

func (h *harness) stored(account string) storedInstall {
	h.t.Helper()
	ctx := context.Background()
	var s storedInstall
	if err := h.pool.QueryRow(ctx, `SELECT status, client_secret_enc IS NOT NULL FROM installs WHERE iris_app_id = $1 AND account_id = $2`,
		testApp, account).Scan(&s.Status, &s.HasCred); err != nil {
		h.t.Fatalf("reading install: %v", err)
	}
	rows, err := h.pool.Query(ctx, `SELECT type || '/' || outcome FROM install_events WHERE iris_app_id = $1 AND account_id = $2 ORDER BY id`, testApp, account)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			h.t.Fatal(err)
		}
		s.Events = append(s.Events, e)
	}
	return s
}

func (h *harness) send(fields map[string]any, iat time.Time) (int, string) {
	h.t.Helper()
	return h.post(h.sign(trackunitsim.Claims{"iat": iat}), installBody(h.t, fields))
}

func wantStatus(t *testing.T, status int, body, want string) {
	t.Helper()
	if status != http.StatusOK || !strings.Contains(body, `"status":"`+want+`"`) {
		t.Fatalf("got %d %s, want 200 with status %q", status, body, want)
	}
}

func TestInstallSemantics(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	account := uuid.NewString()
	t0 := time.Now().Add(-5 * time.Minute).Truncate(time.Second)
	first := installedFields(account)

	status, body := h.send(first, t0)
	wantStatus(t, status, body, "installed")
	creds, err := h.store.InstallCredentials(ctx, testApp, account)
	if err != nil {
		t.Fatal(err)
	}
	if creds.ClientSecret.Reveal() != first["clientSecret"] || creds.ClientID.Reveal() != first["clientId"] {
		t.Fatal("stored credentials differ from the callback's")
	}

	// A duplicate delivery changes nothing.
	status, body = h.send(first, t0)
	wantStatus(t, status, body, "installed")
	again, err := h.store.InstallCredentials(ctx, testApp, account)
	if err != nil {
		t.Fatal(err)
	}
	if again.Version != creds.Version {
		t.Errorf("duplicate delivery changed the version %d → %d", creds.Version, again.Version)
	}

	// New credentials replace the old.
	second := installedFields(account)
	status, body = h.send(second, t0.Add(time.Minute))
	wantStatus(t, status, body, "installed")
	replaced, err := h.store.InstallCredentials(ctx, testApp, account)
	if err != nil {
		t.Fatal(err)
	}
	if replaced.ClientSecret.Reveal() != second["clientSecret"] || replaced.Version <= creds.Version {
		t.Error("new credentials did not replace the old")
	}

	// An older event is stale and changes nothing.
	status, body = h.send(installedFields(account), t0.Add(30*time.Second))
	wantStatus(t, status, body, "stale")
	if c, _ := h.store.InstallCredentials(ctx, testApp, account); c.ClientSecret.Reveal() != second["clientSecret"] {
		t.Error("a stale event replaced the credentials")
	}

	// An unknown type is ignored and leaves the credentials alone.
	status, body = h.send(map[string]any{"type": "SCOPES_CHANGED", "irisAppId": testApp, "accountId": account}, t0.Add(2*time.Minute))
	wantStatus(t, status, body, "ignored")
	if c, _ := h.store.InstallCredentials(ctx, testApp, account); c.ClientSecret.Reveal() != second["clientSecret"] {
		t.Error("an ignored event touched the credentials")
	}

	// UNINSTALLED erases the credentials.
	status, body = h.send(map[string]any{"type": "UNINSTALLED", "irisAppId": testApp, "accountId": account}, t0.Add(3*time.Minute))
	wantStatus(t, status, body, "uninstalled")

	got := h.stored(account)
	want := storedInstall{Status: "uninstalled", HasCred: false, Events: []string{
		"INSTALLED/installed", "INSTALLED/installed", "INSTALLED/installed", "INSTALLED/stale",
		"SCOPES_CHANGED/ignored", "UNINSTALLED/uninstalled",
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored state (-want +got):\n%s", diff)
	}

	// A reinstall after the uninstall brings it back.
	status, body = h.send(installedFields(account), t0.Add(4*time.Minute))
	wantStatus(t, status, body, "installed")
	if s := h.stored(account); s.Status != "installed" || !s.HasCred {
		t.Errorf("after reinstall: %+v", s)
	}
}

// Concurrent duplicate deliveries store one install.
func TestInstallConcurrentDuplicates(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	account := uuid.NewString()
	fields := installedFields(account)
	tok := h.sign(nil)
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, body := h.post(tok, installBody(t, fields)); status != http.StatusOK {
				errs <- fmt.Sprintf("%d %s", status, body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if i, e := h.rowCounts(); i != 1 || e != 20 {
		t.Errorf("stored %d installs, %d events; want 1 and 20", i, e)
	}
}

// With the database unreachable the callback gets 503, never a 2xx; the
// retry after recovery is stored exactly once.
func TestInstallDatabaseDown(t *testing.T) {
	h, proxy := newProxiedHarness(t)
	account := uuid.NewString()
	fields := installedFields(account)
	tok := h.sign(nil)

	proxy.Block()
	for range 3 {
		status, body := h.post(tok, installBody(t, fields))
		if status != http.StatusServiceUnavailable || !strings.Contains(body, `"error":"unavailable"`) {
			t.Fatalf("database down: %d %s, want 503 unavailable", status, body)
		}
	}
	resp, err := http.Get(h.public.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the database down = %d, want 503", resp.StatusCode)
	}
	proxy.Unblock()

	status, body := h.post(tok, installBody(t, fields))
	wantStatus(t, status, body, "installed")
	if got := h.stored(account); got.Status != "installed" || len(got.Events) != 1 {
		t.Errorf("after recovery: %+v, want one install with one event", got)
	}
}

// No client id, secret or JWT is in the database or the logs.
func TestInstallSecretsNeverStoredOrLogged(t *testing.T) {
	h := newHarness(t, harnessOptions{allowedApps: []string{testApp}})
	var secrets []string
	for range 3 {
		account := uuid.NewString()
		f := installedFields(account)
		f["clientId"] = "0oa" + strings.ReplaceAll(uuid.NewString(), "-", "")[:17]
		tok := h.sign(nil)
		secrets = append(secrets, f["clientId"].(string), f["clientSecret"].(string), tok)
		status, body := h.post(tok, installBody(t, f))
		wantStatus(t, status, body, "installed")
		// Failed attempts carrying secrets must not leak them either.
		bad := installedFields(account)
		bad["irisAppId"] = "@evil/app"
		secrets = append(secrets, bad["clientSecret"].(string))
		h.post(tok, installBody(t, bad))
		h.post("garbage", installBody(t, bad))
	}
	dump := testkit.DumpTables(t, h.pool)
	logs := h.logs.String()
	if !strings.Contains(dump, "installs: ") || !strings.Contains(logs, "/appinstall") {
		t.Fatal("the scan saw no rows or no logs; it would prove nothing")
	}
	if !strings.Contains(logs, `"msg":"install event","iris_app_id":"`+testApp+`"`) {
		t.Error("install events are not logged with their app and account")
	}
	for _, s := range secrets {
		for where, text := range map[string]string{"database": dump, "logs": logs} {
			if strings.Contains(text, s) || strings.Contains(text, hex.EncodeToString([]byte(s))) {
				t.Errorf("%s contains a secret (%d chars)", where, len(s))
			}
		}
	}
}

func TestPublicRoutes(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cases := []struct {
		method, path string
		status       int
	}{
		{"GET", "/healthz", 200},
		{"GET", "/readyz", 200},
		{"GET", "/appinstall", 404},
		{"GET", "/metrics", 404},
		{"POST", "/irisx.broker.v1.TokenService/GetToken", 404},
		{"GET", "/admin", 404},
		{"GET", "/", 404},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, h.public.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
	}
}
