package api

import (
	"bytes"
	_ "embed"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/irisx-broker/irisx-broker/store"
)

// Admin page routes and query parameters. The parameter names are the
// ListInstalls / GetInstall field names, so a URL reads like the RPC.
const (
	adminPath       = "/admin"
	adminDetailPath = "/admin/install"

	paramApp       = "irisAppId"
	paramAccount   = "accountId"
	paramStatus    = "status"
	paramPageSize  = "pageSize"
	paramPageToken = "pageToken"
)

// adminRealm is the Basic auth realm browsers show in their login prompt.
const adminRealm = `Basic realm="irisx-broker admin"`

// adminHeaders go on every admin answer, 401s and errors included: the page
// runs no script and loads nothing, must not be framed (clickjacking), and
// lists account ids that should not sit in a shared cache.
var adminHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
	"X-Frame-Options":         "DENY",
	"Cache-Control":           "no-store",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
}

//go:embed admin.html
var adminHTML string

var adminTemplates = template.Must(template.New("admin").Funcs(template.FuncMap{
	"when": adminTime,
}).Parse(adminHTML))

// adminStatuses are the status filter's choices; "" is "any".
var adminStatuses = []string{"", string(store.StatusInstalled), string(store.StatusUninstalled), string(store.StatusCredentialsRejected)}

type adminHandler struct {
	reader InstallReader
	tokens tokenSet
	logger *slog.Logger
}

// registerAdmin adds the admin web page to the internal listener:
//
//	GET /admin           installs, filtered and paged (keyset, like ListInstalls)
//	GET /admin/install   one install and its latest events
//
// Both need HTTP Basic auth with any user name and an ADMIN_API_TOKENS token
// as the password.
func registerAdmin(e *echo.Echo, r InstallReader, tokens tokenSet, logger *slog.Logger) *adminHandler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &adminHandler{reader: r, tokens: tokens, logger: logger}
	e.GET(adminPath, h.list, h.auth)
	e.GET(adminDetailPath, h.detail, h.auth)
	return h
}

// auth admits requests whose Basic auth password is an admin token. The user
// name is not checked: operators share tokens, not accounts.
func (h *adminHandler) auth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		for k, v := range adminHeaders {
			c.Response().Header().Set(k, v)
		}
		_, password, ok := c.Request().BasicAuth()
		if !ok || !h.tokens.contains(password) {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, adminRealm)
			return h.render(c, http.StatusUnauthorized, "error", adminError{
				Title: "Authentication required", Message: "Sign in with any user name and an admin API token as the password.",
			})
		}
		return next(c)
	}
}

// adminFilter is the listing's filter form and paging state.
type adminFilter struct {
	App       string
	Status    string
	PageSize  int
	PageToken string
}

// query is the filter as URL parameters, with token as the page token
// (none for the first page); empty values are left out.
func (f adminFilter) query(token string) string {
	v := url.Values{}
	if f.App != "" {
		v.Set(paramApp, f.App)
	}
	if f.Status != "" {
		v.Set(paramStatus, f.Status)
	}
	if f.PageSize != 0 {
		v.Set(paramPageSize, strconv.Itoa(f.PageSize))
	}
	if token != "" {
		v.Set(paramPageToken, token)
	}
	if len(v) == 0 {
		return adminPath
	}
	return adminPath + "?" + v.Encode()
}

// adminList is the data of the listing page.
type adminList struct {
	Filter   adminFilter
	Statuses []string
	Rows     []adminRow
	NextURL  string // empty on the last page
	FirstURL string // empty on the first page
}

type adminRow struct {
	store.Install
	DetailURL string
}

func (h *adminHandler) list(c echo.Context) error {
	q := c.QueryParams()
	f := adminFilter{
		App:       strings.TrimSpace(q.Get(paramApp)),
		Status:    q.Get(paramStatus),
		PageToken: q.Get(paramPageToken),
	}
	if s := strings.TrimSpace(q.Get(paramPageSize)); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return h.renderError(c, "list installs", invalidArgument("pageSize must be a whole number"))
		}
		f.PageSize = n
	}
	page, err := listInstallsPage(c.Request().Context(), h.reader, f.App, f.Status, f.PageSize, f.PageToken)
	if err != nil {
		return h.renderError(c, "list installs", err)
	}
	if f.PageSize == 0 {
		f.PageSize = store.DefaultListLimit // shown in the form, and kept by the paging links
	}
	data := adminList{Filter: f, Statuses: adminStatuses}
	for _, in := range page.installs {
		v := url.Values{paramApp: {in.IrisAppID}, paramAccount: {in.AccountID}}
		data.Rows = append(data.Rows, adminRow{Install: in, DetailURL: adminDetailPath + "?" + v.Encode()})
	}
	if page.next != "" {
		data.NextURL = f.query(page.next)
	}
	if f.PageToken != "" {
		data.FirstURL = f.query("")
	}
	return h.render(c, http.StatusOK, "list", data)
}

// adminDetail is the data of the detail page.
type adminDetail struct {
	Install store.Install
	Events  []store.Event
}

func (h *adminHandler) detail(c echo.Context) error {
	app, account := c.QueryParam(paramApp), c.QueryParam(paramAccount)
	if err := checkInstallKey(app, account); err != nil {
		return h.renderError(c, "get install", err)
	}
	in, events, err := h.reader.GetInstall(c.Request().Context(), app, canonicalUUID(account), installEventsShown)
	if err != nil {
		return h.renderError(c, "get install", err)
	}
	return h.render(c, http.StatusOK, "detail", adminDetail{Install: in, Events: events})
}

// adminError is the data of the error page. Message is shown as text.
type adminError struct {
	Title   string
	Message string
	Back    bool // offer a link to the unfiltered listing
}

// renderError is the admin page's one way to show an error: the status
// and message of the error table (never a database's or upstream's text),
// logged at the level the table gives.
func (h *adminHandler) renderError(c echo.Context, what string, err error) error {
	a := classify(err)
	h.logger.Log(c.Request().Context(), a.logLevel(), "admin page: "+what+" failed",
		"status", a.status, "error_code", a.code, "error", err.Error())
	title := http.StatusText(a.status)
	if title == "" {
		title = "Error"
	}
	return h.render(c, a.status, "error", adminError{Title: title, Message: a.message, Back: true})
}

// render executes a template into a buffer first, so a template failure is
// a clean 500 instead of half a page.
func (h *adminHandler) render(c echo.Context, status int, name string, data any) error {
	var buf bytes.Buffer
	if err := adminTemplates.ExecuteTemplate(&buf, name, data); err != nil {
		return newError(http.StatusInternalServerError, codeInternal, "internal error", err)
	}
	return c.HTMLBlob(status, buf.Bytes())
}

// adminTime shows a time (or *time.Time) in UTC to the second; "—" for an
// absent or zero time.
func adminTime(v any) string {
	var t time.Time
	switch v := v.(type) {
	case time.Time:
		t = v
	case *time.Time:
		if v != nil {
			t = *v
		}
	}
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}
