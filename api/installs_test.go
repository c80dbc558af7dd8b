package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// adminCall posts a JSON body to an InstallService method and returns the
// status and raw body.
func (h *harness) adminCall(method, body string) (int, string) {
	h.t.Helper()
	return testkit.PostJSON(h.t, h.internal.URL+"/irisx.broker.v1.InstallService/"+method, body, testkit.Bearer(adminToken))
}

type listPage struct {
	Installs []struct {
		IrisAppID string `json:"irisAppId"`
		AccountID string `json:"accountId"`
		Status    string `json:"status"`
	} `json:"installs"`
	NextPageToken string `json:"nextPageToken"`
}

func (h *harness) listAll(filter string, pageSize int) []string {
	h.t.Helper()
	var out []string
	token := ""
	for {
		body := `{"pageSize":` + itoa(pageSize) + filter + `,"pageToken":"` + token + `"}`
		status, raw := h.adminCall("ListInstalls", body)
		if status != http.StatusOK {
			h.t.Fatalf("ListInstalls %s: %d %s", body, status, raw)
		}
		var p listPage
		if err := json.Unmarshal([]byte(raw), &p); err != nil {
			h.t.Fatal(err)
		}
		for _, in := range p.Installs {
			out = append(out, in.IrisAppID+"|"+in.AccountID+"|"+in.Status)
		}
		if p.NextPageToken == "" {
			return out
		}
		token = p.NextPageToken
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestListInstalls(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	var want []string
	var secrets []string
	accounts := make([]string, 7)
	for i := range accounts {
		accounts[i] = uuid.NewString()
		clientID, secret := h.install(accounts[i])
		secrets = append(secrets, clientID, secret.Reveal())
	}
	h.sendEvent(trackunitsim.InstallEvent{Type: "UNINSTALLED", IrisAppID: testApp, AccountID: accounts[3]})
	for i, a := range accounts {
		status := "installed"
		if i == 3 {
			status = "uninstalled"
		}
		want = append(want, testApp+"|"+a+"|"+status)
	}
	sort.Strings(want)

	if diff := cmp.Diff(want, h.listAll("", 2)); diff != "" {
		t.Errorf("all installs in (app, account) order across pages (-want +got):\n%s", diff)
	}
	if got := h.listAll(`,"status":"uninstalled"`, 0); len(got) != 1 || !strings.Contains(got[0], accounts[3]) {
		t.Errorf("status filter: %v", got)
	}
	if got := h.listAll(`,"irisAppId":"@other/app"`, 0); len(got) != 0 {
		t.Errorf("app filter: %v", got)
	}

	// Installs arriving between pages neither repeat nor skip the rows
	// already listed: the walk continues after the last key it returned.
	status, raw := h.adminCall("ListInstalls", `{"pageSize":3}`)
	if status != http.StatusOK {
		t.Fatal(raw)
	}
	var first listPage
	if err := json.Unmarshal([]byte(raw), &first); err != nil {
		t.Fatal(err)
	}
	var added []string
	for range 4 {
		a := uuid.NewString()
		h.install(a)
		added = append(added, testApp+"|"+a+"|installed")
	}
	seen := map[string]int{}
	for _, in := range first.Installs {
		seen[in.IrisAppID+"|"+in.AccountID+"|"+in.Status]++
	}
	token := first.NextPageToken
	for token != "" {
		status, raw := h.adminCall("ListInstalls", `{"pageSize":3,"pageToken":"`+token+`"}`)
		if status != http.StatusOK {
			t.Fatal(raw)
		}
		var p listPage
		if err := json.Unmarshal([]byte(raw), &p); err != nil {
			t.Fatal(err)
		}
		for _, in := range p.Installs {
			seen[in.IrisAppID+"|"+in.AccountID+"|"+in.Status]++
		}
		token = p.NextPageToken
	}
	lastOfFirst := first.Installs[len(first.Installs)-1]
	for _, w := range append(want, added...) {
		key := strings.SplitN(w, "|", 3)
		before := key[0]+"|"+key[1] <= lastOfFirst.IrisAppID+"|"+lastOfFirst.AccountID
		isNew := false
		for _, a := range added {
			isNew = isNew || a == w
		}
		switch {
		case seen[w] > 1:
			t.Errorf("%s listed %d times", w, seen[w])
		case seen[w] == 0 && !(isNew && before):
			t.Errorf("%s skipped", w)
		}
	}

	// No secret in any response, checked on the raw JSON.
	_, raw = h.adminCall("ListInstalls", `{"pageSize":1000}`)
	_, detail := h.adminCall("GetInstall", `{"irisAppId":"`+testApp+`","accountId":"`+accounts[0]+`"}`)
	for _, s := range secrets {
		if strings.Contains(raw, s) || strings.Contains(detail, s) {
			t.Errorf("a listing contains a secret (%d chars)", len(s))
		}
	}
	for _, field := range []string{"clientId", "clientSecret", "client_secret"} {
		if strings.Contains(raw, field) || strings.Contains(detail, field) {
			t.Errorf("a listing has a %s field", field)
		}
	}
}

func TestListInstallsBadRequests(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	for range 3 {
		h.install(uuid.NewString())
	}
	_, raw := h.adminCall("ListInstalls", `{"pageSize":1}`)
	var p listPage
	if err := json.Unmarshal([]byte(raw), &p); err != nil || p.NextPageToken == "" {
		t.Fatalf("first page: %s", raw)
	}
	// A forger who knows the format but not the key: the cursor moved and
	// the MAC kept, or recomputed the way an unkeyed checksum would be.
	body, mac, ok := strings.Cut(p.NextPageToken, ".")
	if !ok {
		t.Fatalf("page token %q has no MAC part", p.NextPageToken)
	}
	decoded, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]string
	if err := json.Unmarshal(decoded, &fields); err != nil {
		t.Fatal(err)
	}
	fields["c"] = "00000000-0000-4000-8000-000000000000" // jump elsewhere
	forgedBody, _ := json.Marshal(fields)
	sum := sha256.Sum256(forgedBody)
	forged := base64.RawURLEncoding.EncodeToString(forgedBody) + "." + mac
	rehashed := base64.RawURLEncoding.EncodeToString(forgedBody) + "." + base64.RawURLEncoding.EncodeToString(sum[:])
	cases := map[string]string{
		"tampered token":         `{"pageToken":"` + forged + `"}`,
		"forged checksum":        `{"pageToken":"` + rehashed + `"}`,
		"filter with NUL":        `{"irisAppId":"@acme/a\u0000b"}`,
		"filter with a space":    `{"irisAppId":"@acme/a b"}`,
		"truncated token":        `{"pageToken":"` + p.NextPageToken[:len(p.NextPageToken)-4] + `"}`,
		"garbage token":          `{"pageToken":"!!!"}`,
		"token for other filter": `{"pageToken":"` + p.NextPageToken + `","status":"installed"}`,
		"negative page size":     `{"pageSize":-1}`,
		"unknown status":         `{"status":"deleted"}`,
	}
	for name, body := range cases {
		status, raw := h.adminCall("ListInstalls", body)
		if status != http.StatusBadRequest || !strings.Contains(raw, `"invalid_argument"`) {
			t.Errorf("%s: %d %s, want invalid_argument", name, status, raw)
		}
	}
	if status, raw := h.adminCall("GetInstall", `{"irisAppId":"`+testApp+`","accountId":"`+uuid.NewString()+`"}`); status != http.StatusNotFound {
		t.Errorf("GetInstall of an unknown install: %d %s", status, raw)
	}
}

func TestGetInstallEvents(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	account := uuid.NewString()
	h.install(account)
	h.sendEvent(trackunitsim.InstallEvent{Type: "UNINSTALLED", IrisAppID: testApp, AccountID: account})
	status, raw := h.adminCall("GetInstall", `{"irisAppId":"`+testApp+`","accountId":"`+account+`"}`)
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, raw)
	}
	var resp struct {
		Install struct{ Status, UninstalledAt string }
		Events  []struct{ Type, Outcome, EventAt, Jti string }
	}
	if err := json.Unmarshal([]byte(raw), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Install.Status != "uninstalled" || resp.Install.UninstalledAt == "" {
		t.Errorf("install = %+v", resp.Install)
	}
	if len(resp.Events) != 2 || resp.Events[0].Type != "UNINSTALLED" || resp.Events[1].Type != "INSTALLED" || resp.Events[0].Jti == "" {
		t.Errorf("events (newest first) = %+v", resp.Events)
	}
}

// A full page of the largest size still says whether another follows.
func TestListInstallsLargestPage(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	if _, err := h.pool.Exec(context.Background(), `INSERT INTO installs (iris_app_id, account_id, status, credentials_version, updated_at, last_event_at)
		SELECT '@bulk/app', gen_random_uuid(), $1, 1, now(), now() FROM generate_series(1, 1001)`, store.StatusUninstalled); err != nil {
		t.Fatal(err)
	}
	_, raw := h.adminCall("ListInstalls", `{"pageSize":1000}`)
	var first listPage
	if err := json.Unmarshal([]byte(raw), &first); err != nil {
		t.Fatal(err)
	}
	if len(first.Installs) != 1000 || first.NextPageToken == "" {
		t.Errorf("first page: %d installs, next token %q; want 1000 and a token", len(first.Installs), first.NextPageToken)
	}
	if got := h.listAll("", 1000); len(got) != 1001 {
		t.Errorf("walking pages of 1000 listed %d installs, want 1001", len(got))
	}
	// A larger page size is served as the maximum.
	_, raw = h.adminCall("ListInstalls", `{"pageSize":5000}`)
	var big listPage
	if err := json.Unmarshal([]byte(raw), &big); err != nil {
		t.Fatal(err)
	}
	if len(big.Installs) != 1000 || big.NextPageToken == "" {
		t.Errorf("pageSize 5000: %d installs, next token %q; want 1000 and a token", len(big.Installs), big.NextPageToken)
	}
}
