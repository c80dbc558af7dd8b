package api_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// irisAppId must be @scope/name, printable ASCII without spaces, at most
// 214 characters: else 400 at the callback (after the identity check)
// with nothing stored, and invalid_argument in the APIs.
func TestIrisAppIDShapes(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	long := "@acme/" + strings.Repeat("a", 214-len("@acme/"))
	cases := []struct {
		name, app string
		valid     bool
	}{
		{"valid", "@acme/fleet-app_2.0", true},
		{"214 characters", long, true},
		{"215 characters", long + "a", false},
		{"space", "@acme/fleet app", false},
		{"leading space", " @acme/fleet", false},
		{"tab", "@acme/fleet\tapp", false},
		{"newline", "@acme/fleet\napp", false},
		{"NUL", "@acme/fleet\x00app", false},
		{"escape sequence", "@acme/\x1b[31mred", false},
		{"DEL", "@acme/fleet\x7f", false},
		{"non-ASCII", "@acme/flëet", false},
		{"no @", "acme/fleet", false},
		{"no /", "@acmefleet", false},
		{"empty scope", "@/fleet", false},
		{"empty name", "@acme/", false},
		{"two slashes", "@acme/fleet/x", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			account := uuid.NewString()
			fields := installedFields(account)
			fields["irisAppId"] = c.app
			before, _ := h.rowCounts()

			// Contract order: a bad identity is answered first.
			if status, body := h.post("not-a-jwt", installBody(t, fields)); status != http.StatusUnauthorized {
				t.Errorf("bad identity and app %q: %d %s, want 401", c.app, status, body)
			}
			status, body := h.post(h.sign(nil), installBody(t, fields))
			after, _ := h.rowCounts()
			if c.valid {
				if status != http.StatusOK || after != before+1 {
					t.Errorf("valid app: %d %s, %d installs stored", status, body, after-before)
				}
			} else {
				if status != http.StatusBadRequest || !strings.Contains(body, `"error":"invalid_request"`) || after != before {
					t.Errorf("app %q: %d %s, %d installs stored; want 400 and none", c.app, status, body, after-before)
				}
			}

			// The APIs refuse the same shapes before looking anything up.
			app := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`, "\x00", `\u0000`, "\x1b", `\u001b`, "\x7f", `\u007f`).Replace(c.app)
			for _, call := range []struct{ path, token, body string }{
				{"/irisx.broker.v1.TokenService/GetToken", internalToken, `{"irisAppId":"` + app + `","accountId":"` + account + `"}`},
				{"/irisx.broker.v1.InstallService/GetInstall", adminToken, `{"irisAppId":"` + app + `","accountId":"` + account + `"}`},
				{"/irisx.broker.v1.InstallService/ListInstalls", adminToken, `{"irisAppId":"` + app + `"}`},
			} {
				_, code, _ := h.connectCall(call.path, call.token, call.body)
				if c.valid && code == "invalid_argument" || !c.valid && code != "invalid_argument" {
					t.Errorf("%s with app %q: code %q", call.path, c.app, code)
				}
			}
		})
	}
}

var generatedRequestID = regexp.MustCompile(`^[0-9a-f]{12}-[0-9a-z]+$`)

// A caller's X-Request-ID is kept only when it is 1-64 characters of
// [A-Za-z0-9._-], on both listeners.
func TestRequestIDShapes(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cases := []struct {
		name, id string
		kept     bool
	}{
		{"simple", "req-123", true},
		{"all classes", "Az09._-", true},
		{"64 characters", strings.Repeat("a", 64), true},
		{"65 characters", strings.Repeat("a", 65), false},
		{"empty", "", false},
		{"space", "req 123", false},
		{"markup", "<script>", false},
		{"non-ASCII", "réq", false},
		{"colon", "a:b", false},
		{"slash", "a/b", false},
	}
	for _, base := range []string{h.public.URL, h.internal.URL} {
		for _, c := range cases {
			req, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
			if c.id != "" {
				req.Header.Set("X-Request-ID", c.id)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := resp.Header.Get("X-Request-ID")
			if c.kept && got != c.id || !c.kept && !generatedRequestID.MatchString(got) {
				t.Errorf("%s %s: X-Request-ID %q", base, c.name, got)
			}
		}
	}
}

// OPTIONS is 404 on every path of both listeners; HEAD /healthz and
// /readyz answer like GET.
func TestOptionsAndHead(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	do := func(method, url string, header map[string]string) *http.Response {
		req, _ := http.NewRequest(method, url, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	preflight := map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
	for _, url := range []string{
		h.public.URL + "/appinstall", h.public.URL + "/healthz", h.public.URL + "/readyz", h.public.URL + "/nope",
		h.internal.URL + "/irisx.broker.v1.TokenService/GetToken", h.internal.URL + "/admin",
		h.internal.URL + "/healthz", h.internal.URL + "/metrics", h.internal.URL + "/",
	} {
		for _, hdr := range []map[string]string{nil, preflight} {
			resp := do(http.MethodOptions, url, hdr)
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Allow") != "" || resp.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("OPTIONS %s: %d, Allow %q", url, resp.StatusCode, resp.Header.Get("Allow"))
			}
		}
	}
	for _, base := range []string{h.public.URL, h.internal.URL} {
		for _, path := range []string{"/healthz", "/readyz"} {
			get, head := do(http.MethodGet, base+path, nil), do(http.MethodHead, base+path, nil)
			if get.StatusCode != http.StatusOK || head.StatusCode != get.StatusCode ||
				head.Header.Get("Content-Type") != get.Header.Get("Content-Type") {
				t.Errorf("HEAD %s%s: %d %q, GET: %d %q", base, path, head.StatusCode, head.Header.Get("Content-Type"),
					get.StatusCode, get.Header.Get("Content-Type"))
			}
		}
	}
}
