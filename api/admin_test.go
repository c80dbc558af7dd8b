package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/html"

	"github.com/irisx-broker/irisx-broker/store"
)

// adminResponse is a fetched admin page.
type adminResponse struct {
	status int
	header http.Header
	body   string
}

// adminGet fetches rawURL with Basic auth password ("" for none) and checks
// the headers every admin answer carries.
func adminGet(t *testing.T, rawURL, password string) adminResponse {
	t.Helper()
	return adminDo(t, rawURL, func(r *http.Request) {
		if password != "" {
			r.SetBasicAuth("ops", password)
		}
	})
}

func adminDo(t *testing.T, rawURL string, auth func(*http.Request)) adminResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	auth(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
		"X-Frame-Options":         "DENY",
		"Cache-Control":           "no-store",
		"Content-Type":            "text/html; charset=UTF-8",
	}
	got := map[string]string{}
	for k := range want {
		got[k] = resp.Header.Get(k)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("headers of a %d answer (-want +got):\n%s", resp.StatusCode, diff)
	}
	return adminResponse{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// page fetches an admin page with the right password and wants status.
func (e *adminEnv) page(pathAndQuery string, status int) *html.Node {
	e.t.Helper()
	r := adminGet(e.t, e.url+pathAndQuery, adminPageToken)
	if r.status != status {
		e.t.Fatalf("GET %s: status %d, want %d; body:\n%s", pathAndQuery, r.status, status, r.body)
	}
	return adminParse(e.t, r.body)
}

func adminParse(t *testing.T, body string) *html.Node {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// adminFind returns the first element under n (depth first) named tag ("" for
// any) for which match is true.
func adminFind(n *html.Node, tag string, match func(*html.Node) bool) *html.Node {
	for d := range n.Descendants() {
		if d.Type == html.ElementNode && (tag == "" || d.Data == tag) && match(d) {
			return d
		}
	}
	return nil
}

func adminAttr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func adminByID(doc *html.Node, id string) *html.Node {
	return adminFind(doc, "", func(n *html.Node) bool { v, _ := adminAttr(n, "id"); return v == id })
}

// adminText is the text content of n, whitespace collapsed; adjacent
// elements are separate words.
func adminText(n *html.Node) string {
	var words []string
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			words = append(words, strings.Fields(d.Data)...)
		}
	}
	return strings.Join(words, " ")
}

// adminRows is the text of every body cell of the table with id, per row.
func adminRows(t *testing.T, doc *html.Node, id string) [][]string {
	t.Helper()
	table := adminByID(doc, id)
	if table == nil {
		t.Fatalf("no table #%s", id)
	}
	var rows [][]string
	for tr := range adminFind(table, "tbody", func(*html.Node) bool { return true }).ChildNodes() {
		if tr.Type != html.ElementNode || tr.Data != "tr" {
			continue
		}
		row := []string{}
		for td := range tr.ChildNodes() {
			if td.Type == html.ElementNode && td.Data == "td" {
				row = append(row, adminText(td))
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// adminKeys is the first three columns of the install rows: app, account, status.
func adminKeys(t *testing.T, doc *html.Node) [][]string {
	t.Helper()
	var keys [][]string
	for _, r := range adminRows(t, doc, "installs") {
		keys = append(keys, r[:min(3, len(r))])
	}
	return keys
}

// adminLink is the href of the element with id, "" when there is none.
func adminLink(doc *html.Node, id string) string {
	if n := adminByID(doc, id); n != nil {
		v, _ := adminAttr(n, "href")
		return v
	}
	return ""
}

func TestAdminAuth(t *testing.T) {
	e := newAdminEnv(t)
	e.install("@acme/fleet", adminAccount(1), store.StatusInstalled, adminNow.Add(-time.Hour))
	for _, path := range []string{"/admin", "/admin/install?irisAppId=%40acme%2Ffleet&accountId=" + adminAccount(1)} {
		cases := []struct {
			name string
			auth func(*http.Request)
			want int
		}{
			{"no credentials", func(*http.Request) {}, http.StatusUnauthorized},
			{"wrong password", func(r *http.Request) { r.SetBasicAuth("ops", "wrong") }, http.StatusUnauthorized},
			{"empty password", func(r *http.Request) { r.SetBasicAuth(adminPageToken, "") }, http.StatusUnauthorized},
			{"token as user name", func(r *http.Request) { r.SetBasicAuth(adminPageToken, "x") }, http.StatusUnauthorized},
			{"token prefix", func(r *http.Request) { r.SetBasicAuth("ops", adminPageToken[:5]) }, http.StatusUnauthorized},
			{"bearer instead of basic", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+adminPageToken) }, http.StatusUnauthorized},
			{"right password", func(r *http.Request) { r.SetBasicAuth("ops", adminPageToken) }, http.StatusOK},
			{"any user name, other token", func(r *http.Request) { r.SetBasicAuth("", "another-admin-token") }, http.StatusOK},
		}
		for _, tc := range cases {
			t.Run(path+"/"+tc.name, func(t *testing.T) {
				r := adminDo(t, e.url+path, tc.auth)
				if r.status != tc.want {
					t.Fatalf("status %d, want %d", r.status, tc.want)
				}
				wantChallenge := ""
				if tc.want == http.StatusUnauthorized {
					wantChallenge = `Basic realm="irisx-broker admin"`
				}
				if got := r.header.Get("WWW-Authenticate"); got != wantChallenge {
					t.Errorf("WWW-Authenticate %q, want %q", got, wantChallenge)
				}
				if tc.want != http.StatusOK && strings.Contains(r.body, "@acme/fleet") {
					t.Error("a refused request was shown install data")
				}
			})
		}
	}
}

func TestAdminListFilters(t *testing.T) {
	e := newAdminEnv(t)
	at := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	e.install("@acme/fleet", adminAccount(1), store.StatusInstalled, at)
	e.install("@acme/fleet", adminAccount(2), store.StatusUninstalled, at)
	e.install("@acme/fleet", adminAccount(3), store.StatusCredentialsRejected, at)
	e.install("@beta/maps", adminAccount(4), store.StatusInstalled, at)
	if err := e.store.RecordTokenResults(context.Background(), []store.TokenResult{
		{IrisAppID: "@acme/fleet", AccountID: adminAccount(1), At: at.Add(2 * time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}

	row := func(app string, n int, status string) []string { return []string{app, adminAccount(n), status} }
	cases := []struct {
		query string
		want  [][]string
	}{
		{"", [][]string{row("@acme/fleet", 1, "installed"), row("@acme/fleet", 2, "uninstalled"),
			row("@acme/fleet", 3, "credentials_rejected"), row("@beta/maps", 4, "installed")}},
		{"?status=installed", [][]string{row("@acme/fleet", 1, "installed"), row("@beta/maps", 4, "installed")}},
		{"?status=uninstalled", [][]string{row("@acme/fleet", 2, "uninstalled")}},
		{"?status=credentials_rejected", [][]string{row("@acme/fleet", 3, "credentials_rejected")}},
		{"?irisAppId=%40beta%2Fmaps", [][]string{row("@beta/maps", 4, "installed")}},
		{"?irisAppId=+%40acme%2Ffleet+&status=installed&pageSize=", [][]string{row("@acme/fleet", 1, "installed")}},
		{"?irisAppId=%40nobody%2Fapp", [][]string{{"No installs match these filters."}}},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			doc := e.page("/admin"+tc.query, http.StatusOK)
			if diff := cmp.Diff(tc.want, adminKeys(t, doc)); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
			if next := adminLink(doc, "next"); next != "" {
				t.Errorf("a single page has a next link %q", next)
			}
		})
	}

	t.Run("every column", func(t *testing.T) {
		got := adminRows(t, e.page("/admin?pageSize=3", http.StatusOK), "installs")
		want := [][]string{
			{"@acme/fleet", adminAccount(1), "installed", "2026-03-01 08:00:00Z", adminNowText, "2026-03-01 10:00:00Z", "", "k1"},
			{"@acme/fleet", adminAccount(2), "uninstalled", "2026-03-01 08:00:00Z", adminNowText, "—", "", ""},
			{"@acme/fleet", adminAccount(3), "credentials_rejected", "2026-03-01 08:00:00Z", adminNowText, "—", "invalid_client", "k1"},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("rows (-want +got):\n%s", diff)
		}
	})

	t.Run("the form shows the filters", func(t *testing.T) {
		doc := e.page("/admin?irisAppId=%40acme%2Ffleet&status=uninstalled&pageSize=7", http.StatusOK)
		form := adminByID(doc, "filter")
		field := func(tag, name string) *html.Node {
			return adminFind(form, tag, func(n *html.Node) bool { v, _ := adminAttr(n, "name"); return v == name })
		}
		value := func(n *html.Node) string { v, _ := adminAttr(n, "value"); return v }
		selected := adminFind(field("select", "status"), "option", func(n *html.Node) bool { _, ok := adminAttr(n, "selected"); return ok })
		got := []string{value(field("input", "irisAppId")), value(selected), value(field("input", "pageSize"))}
		if diff := cmp.Diff([]string{"@acme/fleet", "uninstalled", "7"}, got); diff != "" {
			t.Errorf("form values (-want +got):\n%s", diff)
		}
	})
}

func TestAdminPaging(t *testing.T) {
	e := newAdminEnv(t)
	at := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	for n := 1; n <= 6; n++ {
		e.install("@acme/fleet", adminAccount(n), store.StatusInstalled, at)
	}
	// Other apps on both sides of it, which the filter must keep out of
	// every page.
	e.install("@aaa/first", adminAccount(7), store.StatusInstalled, at)
	e.install("@zzz/last", adminAccount(8), store.StatusInstalled, at)

	path := "/admin?irisAppId=%40acme%2Ffleet&pageSize=2"
	var pages [][][]string
	for i := 0; path != ""; i++ {
		if i == 4 {
			t.Fatal("more than 3 pages")
		}
		doc := e.page(path, http.StatusOK)
		pages = append(pages, adminKeys(t, doc))
		if first := adminLink(doc, "first"); (i == 0) != (first == "") {
			t.Errorf("page %d: first-page link %q", i+1, first)
		} else if i > 0 && first != "/admin?irisAppId=%40acme%2Ffleet&pageSize=2" {
			t.Errorf("page %d: first-page link %q keeps not the filters", i+1, first)
		}
		path = adminLink(doc, "next")
		if path != "" && !strings.HasPrefix(path, "/admin?irisAppId=%40acme%2Ffleet&pageSize=2&pageToken=") {
			t.Errorf("page %d: next link %q does not carry the filters", i+1, path)
		}
	}
	row := func(n int) []string { return []string{"@acme/fleet", adminAccount(n), "installed"} }
	want := [][][]string{{row(1), row(2)}, {row(3), row(4)}, {row(5), row(6)}}
	if diff := cmp.Diff(want, pages); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
}

func TestAdminBadRequests(t *testing.T) {
	e := newAdminEnv(t)
	at := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	for n := 1; n <= 3; n++ {
		e.install("@acme/fleet", adminAccount(n), store.StatusInstalled, at)
	}
	next := adminLink(e.page("/admin?pageSize=1", http.StatusOK), "next")
	u, err := url.Parse(next)
	if err != nil || u.Query().Get("pageToken") == "" {
		t.Fatalf("next link %q has no page token", next)
	}
	token := u.Query().Get("pageToken")
	b := []byte(token)
	if i := len(b) / 2; b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	tampered := string(b)

	const badToken = "pageToken is not one this service issued for these filters"
	cases := []struct{ name, path, message string }{
		{"tampered page token", "/admin?pageSize=1&pageToken=" + tampered, badToken},
		{"garbage page token", "/admin?pageToken=%3Cnot-base64%3E", badToken},
		{"token of other filters", "/admin?status=installed&pageSize=1&pageToken=" + url.QueryEscape(token), badToken},
		{"unknown status", "/admin?status=deleted", "status must be installed, uninstalled or credentials_rejected"},
		{"page size negative", "/admin?pageSize=-1", "pageSize must not be negative"},
		{"page size not a number", "/admin?pageSize=ten", "pageSize must be a whole number"},
		{"detail without account", "/admin/install?irisAppId=%40acme%2Ffleet", "accountId must be a UUID"},
		{"detail with a bad account", "/admin/install?irisAppId=%40acme%2Ffleet&accountId=42", "accountId must be a UUID"},
		{"detail without app", "/admin/install?accountId=" + adminAccount(1), "irisAppId must be @scope/name: printable ASCII without spaces, at most 214 characters"},
		{"filter with a NUL byte", "/admin?irisAppId=%40acme%2Ff%00leet", "irisAppId must be @scope/name: printable ASCII without spaces, at most 214 characters"},
		{"filter with invalid UTF-8", "/admin?irisAppId=%40acme%2F%FF", "irisAppId must be @scope/name: printable ASCII without spaces, at most 214 characters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := e.page(tc.path, http.StatusBadRequest)
			if got := adminText(adminByID(doc, "message")); got != tc.message {
				t.Errorf("message %q, want %q", got, tc.message)
			}
		})
	}
	// The untampered token still works.
	if got := adminKeys(t, e.page(next, http.StatusOK)); len(got) != 1 || got[0][1] != adminAccount(2) {
		t.Errorf("page 2 = %v, want account 2", got)
	}
}

func TestAdminDetail(t *testing.T) {
	e := newAdminEnv(t)
	app, account := "@acme/fleet", adminAccount(1)
	t0 := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	ev := func(typ string, at time.Time, jti string, outcome store.Outcome, unknown ...string) {
		e.apply(store.InstallEvent{
			Type: typ, IrisAppID: app, AccountID: account, EventAt: at, ReceivedAt: at.Add(time.Second),
			ClientID: "0oa-detail-client", ClientSecret: "detail-client-secret", JTI: jti, RemoteAddr: "203.0.113.7",
			UnknownFields: unknown,
		}, outcome)
	}
	ev(store.TypeInstalled, t0, "jti-1", store.OutcomeInstalled, "extra", "<b>x</b>")
	ev("APP_UPDATED", t0.Add(time.Hour), "", store.OutcomeIgnored)
	ev(store.TypeUninstalled, t0.Add(3*time.Hour), "jti-3", store.OutcomeUninstalled)
	ev(store.TypeInstalled, t0.Add(2*time.Hour), "jti-4", store.OutcomeStale) // older than the uninstall

	// Upper case is the same account.
	doc := e.page("/admin/install?irisAppId=%40acme%2Ffleet&accountId="+strings.ToUpper(account), http.StatusOK)
	want := [][]string{
		{"2026-03-01 10:00:00Z", "2026-03-01 10:00:01Z", "INSTALLED", "stale", "jti-4", "203.0.113.7", ""},
		{"2026-03-01 11:00:00Z", "2026-03-01 11:00:01Z", "UNINSTALLED", "uninstalled", "jti-3", "203.0.113.7", ""},
		{"2026-03-01 09:00:00Z", "2026-03-01 09:00:01Z", "APP_UPDATED", "ignored", "", "203.0.113.7", ""},
		{"2026-03-01 08:00:00Z", "2026-03-01 08:00:01Z", "INSTALLED", "installed", "jti-1", "203.0.113.7", "extra <b>x</b>"},
	}
	if diff := cmp.Diff(want, adminRows(t, doc, "events")); diff != "" {
		t.Errorf("events, newest first (-want +got):\n%s", diff)
	}
	if got, want := adminText(adminByID(doc, "install")),
		"App @acme/fleet Account "+account+" Status uninstalled Installed 2026-03-01 08:00:00Z Updated "+adminNowText+
			" Uninstalled 2026-03-01 11:00:00Z Last token — Last error Key id"; got != want {
		t.Errorf("install:\n got %q\nwant %q", got, want)
	}

	// The listing links to this page.
	list := e.page("/admin", http.StatusOK)
	link := adminFind(adminByID(list, "installs"), "a", func(*html.Node) bool { return true })
	if got, _ := adminAttr(link, "href"); got != "/admin/install?accountId="+account+"&irisAppId=%40acme%2Ffleet" {
		t.Errorf("detail link %q", got)
	}

	msg := adminText(adminByID(e.page("/admin/install?irisAppId=%40acme%2Ffleet&accountId="+adminAccount(9), http.StatusNotFound), "message"))
	if want := "no such install"; msg != want {
		t.Errorf("not found message %q, want %q", msg, want)
	}
}

func TestAdminEscapesMarkup(t *testing.T) {
	e := newAdminEnv(t)
	const app = `<script>alert("pwned")</script>`
	e.install(app, adminAccount(1), store.StatusInstalled, adminNow)
	detail := "/admin/install?irisAppId=" + url.QueryEscape(app) + "&accountId=" + adminAccount(1)
	// Such an app id can only be stored by a bug or by hand (the callback
	// refuses it): the listing shows it as text; filtering by it is 400.
	for path, status := range map[string]int{"/admin": http.StatusOK,
		"/admin?irisAppId=" + url.QueryEscape(app): http.StatusBadRequest, detail: http.StatusBadRequest} {
		t.Run(path, func(t *testing.T) {
			r := adminGet(t, e.url+path, adminPageToken)
			if r.status != status {
				t.Fatalf("status %d, want %d", r.status, status)
			}
			if strings.Contains(strings.ToLower(r.body), "<script") {
				t.Errorf("page holds a live <script>:\n%s", r.body)
			}
			doc := adminParse(t, r.body)
			if s := adminFind(doc, "script", func(*html.Node) bool { return true }); s != nil {
				t.Error("page parses to a script element")
			}
			// It is still shown, as text.
			if status == http.StatusOK && !strings.Contains(adminText(doc), app) {
				t.Errorf("app id not shown as text")
			}
		})
	}
}

func TestAdminShowsNoSecret(t *testing.T) {
	e := newAdminEnv(t)
	e.apply(store.InstallEvent{
		Type: store.TypeInstalled, IrisAppID: "@acme/fleet", AccountID: adminAccount(1),
		ClientID: "0oaSECRETCLIENTID42", ClientSecret: "never-show-this-client-secret",
	}, store.OutcomeInstalled)
	for _, path := range []string{"/admin", "/admin/install?irisAppId=%40acme%2Ffleet&accountId=" + adminAccount(1)} {
		r := adminGet(t, e.url+path, adminPageToken)
		if r.status != http.StatusOK || !strings.Contains(r.body, adminAccount(1)) {
			t.Fatalf("GET %s: status %d without the install", path, r.status)
		}
		for _, secret := range []string{"0oaSECRETCLIENTID42", "never-show-this-client-secret", adminPageToken} {
			if strings.Contains(r.body, secret) {
				t.Errorf("GET %s shows %q", path, secret)
			}
		}
	}
}

// adminFailingStore fails every read with an error whose text must stay
// out of the page.
type adminFailingStore struct{}

var errAdminStoreDown = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("10.9.8.7:5432: connect: connection refused (password=hunter2)")}

func (adminFailingStore) ListInstalls(context.Context, store.ListFilter) ([]store.Install, error) {
	return nil, fmt.Errorf("store: list installs: %w", errAdminStoreDown)
}
func (adminFailingStore) GetInstall(context.Context, string, string, int) (store.Install, []store.Event, error) {
	return store.Install{}, nil, fmt.Errorf("store: get install: %w", errAdminStoreDown)
}
func (adminFailingStore) Ping(context.Context) error                                     { return errAdminStoreDown }
func (adminFailingStore) PageToken(store.InstallKey, string, store.InstallStatus) string { return "" }
func (adminFailingStore) ParsePageToken(string, string, store.InstallStatus) (store.InstallKey, error) {
	return store.InstallKey{}, store.ErrInvalid
}

func TestAdminStoreFailure(t *testing.T) {
	base := newAdminServer(t, adminFailingStore{})
	for _, path := range []string{"/admin", "/admin?status=installed", "/admin/install?irisAppId=%40acme%2Ffleet&accountId=" + adminAccount(1)} {
		r := adminGet(t, base+path, adminPageToken)
		if r.status != http.StatusServiceUnavailable {
			t.Errorf("GET %s: status %d, want 503", path, r.status)
		}
		if got := adminText(adminByID(adminParse(t, r.body), "message")); got != "the database is unavailable; retry later" {
			t.Errorf("GET %s: message %q", path, got)
		}
		for _, leak := range []string{"hunter2", "10.9.8.7", "dial tcp"} {
			if strings.Contains(r.body, leak) {
				t.Errorf("GET %s: page shows the internal error (%q)", path, leak)
			}
		}
	}
	// Validation comes first: a bad filter is the caller's fault even
	// while the database is down.
	if r := adminGet(t, base+"/admin?status=bogus", adminPageToken); r.status != http.StatusBadRequest {
		t.Errorf("bad filter while down: status %d, want 400", r.status)
	}
}
