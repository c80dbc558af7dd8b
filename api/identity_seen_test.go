package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/api"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// Distinctive values planted in claims and body fields: none may reach a
// log line, the profile table or the admin view. (The jti is not one: the
// contract logs and stores it as the event's id.)
const (
	seenPlantedJTI   = "PLANTED-jti-c0ffee"
	seenPlantedClaim = "PLANTED-claim-f00d"
	seenPlantedField = "PLANTED-field-beef"
)

// identityLines are the "identity token" log lines, decoded.
func (h *harness) identityLines() []map[string]any {
	h.t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if !strings.Contains(l, `"msg":"identity token"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			h.t.Fatalf("log line is not JSON: %v\n%s", err, l)
		}
		out = append(out, m)
	}
	return out
}

func names(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestIdentityProfileLineAndRecord(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	account := uuid.NewString()
	planted := trackunitsim.Claims{"jti": seenPlantedJTI, "custom": seenPlantedClaim, "irisAppId": testApp, "accountId": account}
	body := installedFields(account)
	body["newField"] = seenPlantedField
	body["<b>odd\u001bname</b>"] = map[string]any{"deep": seenPlantedField}
	body["TYPE"] = "INSTALLED" // matched case-insensitively: not unknown
	raw := installBody(t, body)
	secret := body["clientSecret"].(string)

	// Accepted.
	if status, resp := h.post(h.sign(planted), raw); status != http.StatusOK {
		t.Fatalf("install: %d %s", status, resp)
	}
	// Refused by claim_mismatch (after the body was read) and by the
	// signature (before): each gets one line.
	if status, _ := h.post(h.sign(trackunitsim.Claims{"jti": seenPlantedJTI, "irisAppId": "@other/app"}), raw); status != http.StatusUnauthorized {
		t.Fatalf("mismatch: %d", status)
	}
	tok := h.sign(planted)
	forged := tok[:strings.LastIndexByte(tok, '.')+1] + "AAAA" + tok[strings.LastIndexByte(tok, '.')+5:]
	if status, _ := h.post(forged, raw); status != http.StatusUnauthorized {
		t.Fatalf("forged: %d", status)
	}

	lines := h.identityLines()
	if len(lines) != 3 {
		t.Fatalf("%d identity token lines, want 3:\n%s", len(lines), h.logs.String())
	}
	wantUnknown := []string{`<b>odd\u001bname</b>`, "newField"}
	for i, want := range []struct {
		verdict, rule string
		unknown       []string
		claims        []string
	}{
		{"accepted", "", wantUnknown, []string{"accountId", "custom", "exp", "iat", "irisAppId", "jti"}},
		{"refused", "claim_mismatch", wantUnknown, []string{"exp", "iat", "irisAppId", "jti"}},
		// Refused before the body was read: no unknown_fields at all.
		{"refused", "signature", nil, []string{"accountId", "custom", "exp", "iat", "irisAppId", "jti"}},
	} {
		l := lines[i]
		if l["verdict"] != want.verdict || (want.rule != "" && l["rule"] != want.rule) {
			t.Errorf("line %d: verdict %v rule %v, want %s %s", i, l["verdict"], l["rule"], want.verdict, want.rule)
		}
		if diff := cmp.Diff(want.claims, names(l["claims"])); diff != "" {
			t.Errorf("line %d claims (-want +got):\n%s", i, diff)
		}
		if want.unknown == nil {
			if u, ok := l["unknown_fields"]; ok {
				t.Errorf("line %d: unknown_fields %v for an unread body", i, u)
			}
		} else if diff := cmp.Diff(want.unknown, names(l["unknown_fields"])); diff != "" {
			t.Errorf("line %d unknown fields (-want +got):\n%s", i, diff)
		}
		if l["alg"] != "RS256" || l["typ"] != "JWT" || l["kid"] != h.sim.SigningKID() || l["lifetime"] != "5m0s" || l["age"] == nil {
			t.Errorf("line %d: %v", i, l)
		}
	}
	logs := h.logs.String()
	for _, f := range append([]string{seenPlantedClaim, seenPlantedField, secret, tok, forged}, strings.Split(tok, ".")...) {
		if strings.Contains(logs, f) {
			t.Errorf("logs hold %.30q", f)
		}
	}

	// The event log has the names, never the values.
	var unknown []string
	if err := h.pool.QueryRow(context.Background(), "SELECT unknown_fields FROM install_events").Scan(&unknown); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantUnknown, unknown); diff != "" {
		t.Errorf("event log unknown fields (-want +got):\n%s", diff)
	}

	// The profile table gets all three, in the background.
	count := func() (n int) {
		_ = h.pool.QueryRow(context.Background(), "SELECT count(*) FROM identity_profiles").Scan(&n)
		return n
	}
	testkit.WaitFor(t, "three recorded profiles", func() bool { return count() == 3 })
	table := testkit.DumpTables(t, h.pool, "identity_profiles")
	for _, f := range []string{seenPlantedJTI, seenPlantedClaim, seenPlantedField, secret, account} {
		if strings.Contains(table, f) {
			t.Errorf("identity_profiles holds %q:\n%s", f, table)
		}
	}
}

// The admin view groups profiles by shape and escapes what an attacker sent.
func TestAdminIdentityView(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	account := uuid.NewString()
	body := installedFields(account)
	body["<script>alert(1)</script>"] = 1
	raw := installBody(t, body)
	for range 2 {
		if status, resp := h.post(h.sign(trackunitsim.Claims{"irisAppId": testApp}), raw); status != http.StatusOK {
			t.Fatalf("install: %d %s", status, resp)
		}
	}
	hostile := h.sign(trackunitsim.Claims{"iss": `"><img src=x onerror=alert(1)>`, `<i>claim</i>`: 1, "jti": seenPlantedJTI})
	hostile = hostile[:len(hostile)-4] + "AAAA" // a bad signature: refused, still profiled
	if status, _ := h.post(hostile, raw); status != http.StatusUnauthorized {
		t.Fatalf("hostile: %d", status)
	}
	testkit.WaitFor(t, "profiles recorded", func() bool {
		var n int
		_ = h.pool.QueryRow(context.Background(), "SELECT count(*) FROM identity_profiles").Scan(&n)
		return n == 3
	})

	req, _ := http.NewRequest(http.MethodGet, h.internal.URL+"/admin/identity", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without auth: %d, want 401", resp.StatusCode)
	}
	req.SetBasicAuth("ops", adminToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	html := string(page)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, html)
	}
	for _, want := range []string{
		// Two accepted callbacks, one shape.
		"claims [exp iat irisAppId jti]",
		"&lt;script&gt;alert(1)&lt;/script&gt;",
		"&lt;i&gt;claim&lt;/i&gt;",
		"&#34;&gt;&lt;img src=x onerror=alert(1)&gt;",
		"<td>2</td>",
		"signature",
		"(body not read)",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"<script>", "<img", "<i>", seenPlantedJTI} {
		if strings.Contains(html, bad) {
			t.Errorf("page holds %q unescaped", bad)
		}
	}
	if t.Failed() {
		fmt.Println(html)
	}
}

// blockedProfiles is a ProfileStore whose inserts hang until the test ends.
type blockedProfiles struct {
	started chan struct{}
	release chan struct{}
}

func (b *blockedProfiles) RecordIdentityProfile(ctx context.Context, _ store.IdentityProfile) error {
	select {
	case b.started <- struct{}{}:
	default:
	}
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return ctx.Err()
}

func (b *blockedProfiles) ListIdentityProfiles(context.Context, string, int) ([]store.IdentityProfile, error) {
	return nil, nil
}

// Recording never blocks a callback, even with the database stuck, and a
// flood of refused tokens is admitted only at the capped rate.
func TestProfileRecorderNeverBlocks(t *testing.T) {
	st := &blockedProfiles{started: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(st.release)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rec := api.NewProfileRecorder(st, nil, func() time.Time { return now })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	start := time.Now()
	for range 10_000 {
		rec.Record(identity.Profile{Verdict: identity.VerdictRefused, Rule: identity.ReasonSignature}, nil)
		rec.Record(identity.Profile{Verdict: identity.VerdictAccepted}, nil)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("20,000 Record calls took %v with the store stuck", d)
	}
	select {
	case <-st.started:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer never started an insert")
	}
}

type countingProfiles struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *countingProfiles) RecordIdentityProfile(_ context.Context, p store.IdentityProfile) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[p.Verdict]++
	return nil
}

func (c *countingProfiles) ListIdentityProfiles(context.Context, string, int) ([]store.IdentityProfile, error) {
	return nil, nil
}

func (c *countingProfiles) get(v string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[v]
}

// Refused profiles are admitted 20 at once, then 5 a second; accepted
// ones (only Trackunit can sign them) are not rate-capped.
func TestProfileRecorderCapsRefused(t *testing.T) {
	st := &countingProfiles{counts: map[string]int{}}
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	rec := api.NewProfileRecorder(st, nil, clock)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	for range 50 {
		rec.Record(identity.Profile{Verdict: identity.VerdictRefused}, nil)
	}
	for range 30 {
		rec.Record(identity.Profile{Verdict: identity.VerdictAccepted}, nil)
	}
	testkit.WaitFor(t, "20 refused and 30 accepted", func() bool { return st.get("refused") == 20 && st.get("accepted") == 30 })
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	for range 50 {
		rec.Record(identity.Profile{Verdict: identity.VerdictRefused}, nil)
	}
	testkit.WaitFor(t, "5 more refused", func() bool { return st.get("refused") == 25 })
	time.Sleep(50 * time.Millisecond)
	if n := st.get("refused"); n != 25 {
		t.Errorf("%d refused recorded, want 25", n)
	}
}
