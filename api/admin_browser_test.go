package api_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/api"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// adminChromium is where the browser test expects Debian's Chromium.
const adminChromium = "/usr/bin/chromium"

// adminScreenshot is the page's picture in the docs, rewritten when
// UPDATE_SCREENSHOT=1.
var adminScreenshot = filepath.Join("..", "docs", "admin.png")

// adminBrowserAccounts are fixed account ids, ascending, so the listing
// order is known and the screenshot looks like real data.
var adminBrowserAccounts = []string{
	"1b4e28ba-2fa1-41d2-883f-0016d3cca427",
	"3f2504e0-4f89-41d3-9a0c-0305e82c3301",
	"6fa459ea-ee8a-4ca4-894e-db77e160355e",
	"9c5b94b1-35ad-49bb-b118-8e8fc24abf80",
	"a8098c1a-f86e-41da-a1d4-1b0e7a9e1b1c",
	"c9bf9e57-1685-4c89-bafb-ff5af830be8a",
	"e02fd0e4-00fd-490d-a4e0-6a1d7b8e4d2f",
}

// The test environment below is shared with admin_test.go.

const (
	adminPageToken = "admin-page-test-token"
	// adminNowText is adminNow as the page shows it: every row's Updated.
	adminNowText = "2026-03-14 09:30:00Z"
)

// adminNow is the store's clock, so updated_at is predictable.
var adminNow = time.Date(2026, 3, 14, 9, 30, 0, 0, time.UTC)

// adminVerifier stands in for the identity verifier, which the admin page
// does not use; NewInternal only asks it for readiness.
type adminVerifier struct{}

func (adminVerifier) Check(context.Context, string) (*identity.Identity, identity.Profile, error) {
	return nil, identity.Profile{}, errors.New("adminVerifier: not used")
}
func (adminVerifier) Ready() bool { return true }

// adminEnv is the internal listener on a real store over a fresh database.
type adminEnv struct {
	t     *testing.T
	store *store.Store
	url   string
}

func newAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := store.Open(ctx, testdb.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	keys := testkit.Keyring(t, testkit.KeySpec)
	st := store.New(pool, keys, store.WithClock(func() time.Time { return adminNow }))
	return &adminEnv{t: t, store: st, url: newAdminServer(t, st)}
}

// newAdminServer serves the internal listener the way the service builds
// it, with two admin tokens (the page must accept any of them).
func newAdminServer(t *testing.T, st api.InternalStore) string {
	t.Helper()
	profiles, _ := st.(api.ProfileStore)
	srv := httptest.NewServer(api.NewInternal(api.InternalDeps{
		Verifier:    adminVerifier{},
		Store:       st,
		AdminTokens: []crypto.Secret{"another-admin-token", adminPageToken},
		Profiles:    profiles,
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// adminAccount is a fixed account id that sorts by n.
func adminAccount(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

// apply applies one install event and checks its outcome.
func (e *adminEnv) apply(ev store.InstallEvent, want store.Outcome) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := e.store.ApplyInstallEvent(ctx, ev)
	if err != nil {
		e.t.Fatalf("apply %s %s/%s: %v", ev.Type, ev.IrisAppID, ev.AccountID, err)
	}
	if got != want {
		e.t.Fatalf("apply %s %s/%s: outcome %q, want %q", ev.Type, ev.IrisAppID, ev.AccountID, got, want)
	}
}

// install stores an install with the given status, installed at at.
func (e *adminEnv) install(app, account string, status store.InstallStatus, at time.Time) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.apply(store.InstallEvent{
		Type: store.TypeInstalled, IrisAppID: app, AccountID: account, EventAt: at, ReceivedAt: at,
		ClientID: crypto.Secret("0oa-client-id-" + account[len(account)-4:]), ClientSecret: crypto.Secret("client-secret-" + account),
	}, store.OutcomeInstalled)
	switch status {
	case store.StatusUninstalled:
		e.apply(store.InstallEvent{Type: store.TypeUninstalled, IrisAppID: app, AccountID: account,
			EventAt: at.Add(time.Hour), ReceivedAt: at.Add(time.Hour)}, store.OutcomeUninstalled)
	case store.StatusCredentialsRejected:
		c, err := e.store.InstallCredentials(ctx, app, account)
		if err != nil {
			e.t.Fatal(err)
		}
		if err := e.store.MarkCredentialsRejected(ctx, app, account, c.Version, "invalid_client"); err != nil {
			e.t.Fatal(err)
		}
	}
}

// findChromium fails the test, never skips it, when Chromium is missing:
// CI installs it, and a silently skipped browser test proves nothing.
func findChromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(adminChromium); err == nil {
		return adminChromium
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatalf("Chromium is required by this test and was not found at %s or on PATH; "+
		"install it with: apt-get update && apt-get install -y chromium", adminChromium)
	return ""
}

// seedBrowserData stores installs of three apps in every status.
func (e *adminEnv) seedBrowserData() {
	e.t.Helper()
	at := time.Date(2026, 2, 20, 14, 5, 0, 0, time.UTC)
	acc := adminBrowserAccounts
	e.install("@acme/fleet-tracker", acc[0], store.StatusInstalled, at)
	e.install("@acme/fleet-tracker", acc[1], store.StatusInstalled, at.Add(26*time.Hour))
	e.install("@acme/fleet-tracker", acc[2], store.StatusCredentialsRejected, at.Add(50*time.Hour))
	e.install("@acme/fleet-tracker", acc[3], store.StatusUninstalled, at.Add(3*time.Hour))
	e.install("@beta/maintenance", acc[4], store.StatusInstalled, at.Add(-72*time.Hour))
	e.install("@beta/maintenance", acc[5], store.StatusUninstalled, at.Add(-48*time.Hour))
	e.install("@zeta/reports", acc[6], store.StatusInstalled, at.Add(100*time.Hour))
	err := e.store.RecordTokenResults(context.Background(), []store.TokenResult{
		{IrisAppID: "@acme/fleet-tracker", AccountID: acc[0], At: adminNow.Add(-12 * time.Minute)},
		{IrisAppID: "@acme/fleet-tracker", AccountID: acc[1], At: adminNow.Add(-3 * time.Hour)},
		{IrisAppID: "@beta/maintenance", AccountID: acc[4], At: adminNow.Add(-2 * time.Hour)},
		{IrisAppID: "@beta/maintenance", AccountID: acc[4], At: adminNow.Add(-time.Hour), LastError: "unavailable"},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	age, life := 1200*time.Millisecond, 5*time.Minute
	for _, p := range []store.IdentityProfile{
		{SeenAt: adminNow.Add(-time.Hour), Verdict: store.VerdictAccepted, Alg: "RS256", Kid: "rs256-live", Typ: "JWT",
			Iss: "https://iris.trackunit.com", Aud: []string{"irisx-broker"}, Claims: []string{"accountId", "exp", "iat", "irisAppId", "iss", "jti"},
			ClaimCount: 6, Age: &age, Lifetime: &life, UnknownFields: []string{"<script>document.title='pwned'</script>", "newField"}},
		{SeenAt: adminNow.Add(-30 * time.Minute), Verdict: store.VerdictAccepted, Alg: "RS256", Kid: "rs256-live", Typ: "JWT",
			Iss: "https://iris.trackunit.com", Aud: []string{"irisx-broker"}, Claims: []string{"accountId", "exp", "iat", "irisAppId", "iss", "jti"},
			ClaimCount: 6, Age: &age, Lifetime: &life, UnknownFields: []string{"<script>document.title='pwned'</script>", "newField"}},
		{SeenAt: adminNow.Add(-10 * time.Minute), Verdict: store.VerdictRefused, Rule: "signature", Alg: "RS256", Kid: "evil",
			Iss: `"><img src=x onerror="document.title='pwned'">`, Claims: []string{"<img src=x onerror=document.title='pwned'>", "exp"}, ClaimCount: 2},
	} {
		if err := e.store.RecordIdentityProfile(context.Background(), p); err != nil {
			e.t.Fatal(err)
		}
	}
}

func TestAdminBrowser(t *testing.T) {
	chromium := findChromium(t)
	e := newAdminEnv(t)
	e.seedBrowserData()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	allocCtx, allocCancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 600),
	)
	defer allocCancel() // before t.TempDir's cleanup: the browser has exited
	bctx, bcancel := chromedp.NewContext(allocCtx)
	defer bcancel()

	b := &adminBrowser{t: t, ctx: bctx, base: e.url}
	row := func(app string, n int, status string) []string {
		return []string{app, adminBrowserAccounts[n], status}
	}

	// The page renders the first page of rows.
	b.password(adminPageToken)
	b.navigate("/admin?pageSize=5", http.StatusOK)
	b.wantRows("first page", [][]string{
		row("@acme/fleet-tracker", 0, "installed"),
		row("@acme/fleet-tracker", 1, "installed"),
		row("@acme/fleet-tracker", 2, "credentials_rejected"),
		row("@acme/fleet-tracker", 3, "uninstalled"),
		row("@beta/maintenance", 4, "installed"),
	})
	if !b.has("next") {
		t.Error("a first page of 5 out of 7 has no Next page link")
	}
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(adminScreenshot, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", adminScreenshot, len(png))
	}

	// Choosing a status and submitting the form narrows the rows.
	b.set(`#filter select[name="status"]`, "uninstalled")
	b.click(`#filter button[type="submit"]`)
	b.wantRows("status uninstalled", [][]string{
		row("@acme/fleet-tracker", 3, "uninstalled"),
		row("@beta/maintenance", 5, "uninstalled"),
	})
	if loc := b.location(); !strings.Contains(loc, "status=uninstalled") {
		t.Errorf("filtered page at %s", loc)
	}

	// Pages of 2 installed rows, forward with Next page and back with First page.
	b.set(`#filter select[name="status"]`, "installed")
	b.set(`#filter input[name="pageSize"]`, "2")
	b.click(`#filter button[type="submit"]`)
	page1 := [][]string{row("@acme/fleet-tracker", 0, "installed"), row("@acme/fleet-tracker", 1, "installed")}
	b.wantRows("installed, page 1", page1)
	b.click("#next")
	b.wantRows("installed, page 2", [][]string{row("@beta/maintenance", 4, "installed"), row("@zeta/reports", 6, "installed")})
	if b.has("next") {
		t.Error("the last page has a Next page link")
	}
	if got, err := chromedp.Run(bctx, chromedp.Value(chromedp.CSS(`#filter select[name="status"]`))); err != nil || got != "installed" {
		t.Errorf("status filter on page 2 = %q, %v; want installed", got, err)
	}
	b.click("#first")
	b.wantRows("installed, first page again", page1)

	// The identity view, reached from the header link, shows what tokens
	// and callbacks carried as text: markup an attacker put in a claim name
	// or a body field never becomes an element.
	b.navigate("/admin", http.StatusOK)
	b.click(`header a[href="/admin/identity"]`)
	shapes, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`Array.from(
		document.querySelectorAll('#accepted td.shape, #accepted td.unknown, #refused td.shape, #refused td.unknown'),
		td => td.innerText.trim())`))
	if err != nil {
		t.Fatalf("read the identity view: %v", err)
	}
	wantShapes := []string{
		"iss=https://iris.trackunit.com, aud=[irisx-broker], claims [accountId exp iat irisAppId iss jti], alg RS256, typ JWT",
		"<script>document.title='pwned'</script> newField",
		`iss="><img src=x onerror="document.title='pwned'">, aud=[], claims [<img src=x onerror=document.title='pwned'> exp], alg RS256`,
		"(body not read)",
	}
	if diff := cmp.Diff(wantShapes, shapes); diff != "" {
		t.Errorf("identity view (-want +got):\n%s", diff)
	}
	injected, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('main img, main script, main b').length`))
	if err != nil || injected != 0 {
		t.Errorf("the identity view has %d injected elements (%v)", injected, err)
	}
	if title, _ := chromedp.Run(bctx, chromedp.Title()); strings.Contains(title, "pwned") {
		t.Errorf("page title %q: injected script ran", title)
	}

	// A wrong password is refused.
	b.password("wrong-" + adminPageToken)
	b.wantRefused("/admin")
	if b.has("installs") {
		t.Error("the browser shows the installs table after a refusal")
	}
}

// adminBrowser drives one tab; every step fails the test on error.
type adminBrowser struct {
	t    *testing.T
	ctx  context.Context
	base string
}

// password makes every later request carry Basic auth with it.
func (b *adminBrowser) password(p string) {
	b.t.Helper()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:"+p))
	err := chromedp.Do(b.ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": auth},
		})
		return err
	}))
	if err != nil {
		b.t.Fatalf("set Authorization: %v", err)
	}
}

// wantRefused navigates to path and wants a 401 with the Basic challenge.
// Headless Chromium has no login prompt to show, so it turns the challenge
// into the load error ERR_INVALID_AUTH_CREDENTIALS; the status comes from
// the network events.
func (b *adminBrowser) wantRefused(path string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	responses := chromedp.Events(ctx, network.ResponseReceivedExtraInfo)
	_, err := chromedp.Run(ctx, chromedp.NavigateResponse(b.base+path))
	if err == nil || !strings.Contains(err.Error(), "ERR_INVALID_AUTH_CREDENTIALS") {
		b.t.Errorf("navigate %s with a wrong password: error %v, want ERR_INVALID_AUTH_CREDENTIALS", path, err)
	}
	for ev, err := range responses {
		if err != nil {
			b.t.Fatalf("no 401 response seen for %s: %v", path, err)
		}
		if ev.StatusCode != http.StatusUnauthorized {
			b.t.Fatalf("navigate %s with a wrong password: status %d, want 401", path, ev.StatusCode)
		}
		challenge := ""
		for k, v := range ev.Headers {
			if strings.EqualFold(k, "WWW-Authenticate") {
				challenge, _ = v.(string)
			}
		}
		if challenge != `Basic realm="irisx-broker admin"` {
			b.t.Errorf("401 challenge %q", challenge)
		}
		return
	}
}

func (b *adminBrowser) navigate(path string, status int64) {
	b.t.Helper()
	resp, err := chromedp.Run(b.ctx, chromedp.NavigateResponse(b.base+path))
	if err != nil {
		b.t.Fatalf("navigate %s: %v", path, err)
	}
	if resp.Status != status {
		b.t.Fatalf("navigate %s: status %d, want %d", path, resp.Status, status)
	}
}

// click clicks what sel selects and waits for the page it loads, which must
// be a 200.
func (b *adminBrowser) click(css string) {
	b.t.Helper()
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.CSS(css)))
	if err != nil {
		b.t.Fatalf("click %s: %v", css, err)
	}
	if resp.Status != http.StatusOK {
		b.t.Fatalf("click %s: status %d, want 200", css, resp.Status)
	}
}

func (b *adminBrowser) set(css, value string) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.SetValue(chromedp.CSS(css), value)); err != nil {
		b.t.Fatalf("set %s: %v", css, err)
	}
}

// rows is the app, account and status the browser shows per table row.
func (b *adminBrowser) rows() [][]string {
	b.t.Helper()
	rows, err := chromedp.Run(b.ctx, chromedp.Evaluate[[][]string](`Array.from(
		document.querySelectorAll('#installs tbody tr'),
		tr => Array.from(tr.cells).slice(0, 3).map(td => td.innerText.trim()))`))
	if err != nil {
		b.t.Fatalf("read the installs table: %v", err)
	}
	return rows
}

func (b *adminBrowser) wantRows(what string, want [][]string) {
	b.t.Helper()
	if diff := cmp.Diff(want, b.rows()); diff != "" {
		b.t.Errorf("%s: rows (-want +got):\n%s", what, diff)
	}
}

// has says whether the page has an element with id (a plain identifier).
func (b *adminBrowser) has(id string) bool {
	b.t.Helper()
	found, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.getElementById('`+id+`') !== null`))
	if err != nil {
		b.t.Fatalf("look for #%s: %v", id, err)
	}
	return found
}

func (b *adminBrowser) location() string {
	b.t.Helper()
	loc, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		b.t.Fatalf("location: %v", err)
	}
	return loc
}
