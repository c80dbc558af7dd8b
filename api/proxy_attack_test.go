package api_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// rawStatus sends a request-target exactly as given, which an http.Client
// would clean or escape, and returns the answer's status.
func rawStatus(t *testing.T, addr, method, target string, extra string) int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n",
		method, target, addr, internalToken, extra)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestProxyPathAttacks(t *testing.T) {
	p := newProxyHarness(t)
	account, _ := p.installed()
	addr := strings.TrimPrefix(p.srv.URL, "http://")
	base := "/iris/accounts/" + account + "/"
	cases := map[string]string{
		"dotdot":                base + "../admin",
		"dotdot deep":           base + "api/../../admin",
		"dotdot trailing":       base + "api/echo/..",
		"dot":                   base + "./api/echo",
		"encoded dotdot":        base + "api/%2e%2e/admin",
		"encoded dotdot upper":  base + "api/%2E%2E/admin",
		"half encoded dotdot":   base + "api/.%2e/admin",
		"half encoded dotdot 2": base + "api/%2e./admin",
		"double encoded dotdot": base + "api/%252e%252e/admin",
		"dotdot with params":    base + "api/..;/admin",
		"encoded slash":         base + "api%2Fecho",
		"encoded slash lower":   base + "api%2fecho",
		"double encoded slash":  base + "api%252Fecho",
		"backslash":             base + `api\echo`,
		"encoded backslash":     base + "api%5Cecho",
		"encoded backslash low": base + "api%5cecho",
		"backslash dotdot":      base + `..\admin`,
		"double slash host":     base + "/evil.example/api/echo",
		"empty segment":         base + "api//echo",
		"absolute url":          base + "http://evil.example/api/echo",
		"absolute url encoded":  base + "http:%2F%2Fevil.example/api/echo",
		"scheme relative":       base + "//evil.example/x",
		"userinfo":              base + "user@evil.example/api/echo",
		"nul":                   base + "api/echo%00x",
		"crlf":                  base + "api/echo%0d%0aX-Injected:%201",
		"tab":                   base + "api/%09echo",
		"del":                   base + "api/%7Fecho",
		"bad escape":            base + "api/%zzecho",
		"no path":               base,
		"account not uuid":      "/iris/accounts/not-a-uuid/api/echo",
		"account traversal":     "/iris/accounts/..%2F" + account + "/api/echo",
		"absolute form":         "http://evil.example" + base + "api/echo",
	}
	for name, target := range cases {
		t.Run(name, func(t *testing.T) {
			if got := rawStatus(t, addr, http.MethodGet, target, ""); got != http.StatusBadRequest {
				t.Errorf("%s: status %d, want 400", target, got)
			}
		})
	}
	if n := p.tokens.minted.Load(); n != 0 {
		t.Errorf("path tricks minted %d tokens", n)
	}
	if n := p.upstreamCalls(); n != 0 {
		t.Errorf("path tricks reached upstream %d times", n)
	}
	// The honest neighbours of those tricks pass.
	for _, target := range []string{base + "api/echo", base + "api/echo/", base + "api/echo/a..b/.well", base + "api/echo/%25"} {
		if got := rawStatus(t, addr, http.MethodGet, target, ""); got != http.StatusOK {
			t.Errorf("%s: status %d, want 200", target, got)
		}
	}
}

func TestProxyBodyLimit(t *testing.T) {
	p := newProxyHarness(t)
	account, _ := p.installed()
	big := bytes.Repeat([]byte("x"), 11<<20)

	t.Run("content length", func(t *testing.T) {
		resp, body := p.call(p.srv, http.MethodPost, account, "api/echo", bytes.NewReader(big))
		wantErrorBody(t, resp, body, http.StatusRequestEntityTooLarge, "payload_too_large")
		if p.tokens.minted.Load() != 0 {
			t.Error("a token was minted for an announced oversize body")
		}
	})
	t.Run("chunked", func(t *testing.T) {
		// No Content-Length: only reading tells.
		resp, body := p.call(p.srv, http.MethodPost, account, "api/echo", io.MultiReader(bytes.NewReader(big)))
		wantErrorBody(t, resp, body, http.StatusRequestEntityTooLarge, "payload_too_large")
	})
	if reqs := p.sim.IRISRequests(); len(reqs) != 0 {
		t.Errorf("the upstream accepted %d oversize requests", len(reqs))
	}
	t.Run("chunked under the limit streams", func(t *testing.T) {
		ok := big[:9<<20]
		resp, _ := p.call(p.srv, http.MethodPost, account, "api/echo", io.MultiReader(bytes.NewReader(ok)))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if reqs := p.sim.IRISRequests(); len(reqs) != 1 || len(reqs[0].Body) != len(ok) {
			t.Errorf("the upstream did not get the 9 MiB body whole")
		}
	})
}

func TestProxyTokenErrors(t *testing.T) {
	p := newProxyHarness(t)
	uninstalled, _ := p.installed()
	p.sendEvent(trackunitsim.InstallEvent{Type: "UNINSTALLED", IrisAppID: testApp, AccountID: uninstalled})
	rejected, rejectedClient := p.installed()
	p.sim.RevokeClient(rejectedClient)
	down, _ := p.installed()
	cases := []struct {
		name, account string
		headers       []string
		prepare       func()
		status        int
		code          string
	}{
		{"unknown install", "6f9619ff-8b86-d011-b42d-00cf4fc964ff", nil, nil, http.StatusNotFound, "not_found"},
		{"uninstalled", uninstalled, nil, nil, http.StatusPreconditionFailed, "failed_precondition"},
		{"credentials rejected", rejected, nil, nil, http.StatusPreconditionFailed, "failed_precondition"},
		{"invalid scope", down, []string{"Irisx-Scopes", "no.such.scope"}, nil, http.StatusBadRequest, "invalid_request"},
		{"token endpoint down", down, nil, func() {
			p.sim.InjectFault(trackunitsim.EndpointAppToken, trackunitsim.Fault{Status: http.StatusServiceUnavailable})
		}, http.StatusServiceUnavailable, "unavailable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.prepare != nil {
				c.prepare()
			}
			resp, body := p.call(p.srv, http.MethodGet, c.account, "api/echo", nil, c.headers...)
			wantErrorBody(t, resp, body, c.status, c.code)
		})
	}
	if n := p.upstreamCalls(); n != 0 {
		t.Errorf("token failures reached the IRIS API %d times", n)
	}
}

func TestProxyStreamsALargeAnswer(t *testing.T) {
	p := newProxyHarness(t)
	account, _ := p.installed()
	const size = 200 << 20
	// Warm up the connections, the token and the pools.
	if resp, _ := p.call(p.srv, http.MethodGet, account, "api/blob?bytes=1024", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up %d", resp.StatusCode)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	resp := p.do(p.srv, http.MethodGet, account, fmt.Sprintf("api/blob?bytes=%d", size), nil)
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	runtime.ReadMemStats(&after)
	if err != nil || n != size {
		t.Fatalf("read %d bytes (%v), want %d", n, err, size)
	}
	// Everything in this process (the stand-in, the proxy, the client)
	// allocated less than a tenth of the answer: it was never held whole.
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 16<<20 {
		t.Errorf("streaming %d MiB allocated %d MiB", size>>20, grown>>20)
	}
}

func TestProxySecretsNotInLogsOrMetrics(t *testing.T) {
	p := newProxyHarness(t)
	account, clientID := p.installed()
	p.sim.InjectFault(trackunitsim.EndpointIRIS, trackunitsim.Fault{Status: http.StatusUnauthorized, Times: 1})
	p.call(p.srv, http.MethodGet, account, "api/echo?q=1", nil)
	p.call(p.srv, http.MethodGet, account, "api/echo", nil, "Irisx-Scopes", "no.such.scope")
	p.sim.RateLimitGraphQL(1000, 1)
	p.call(p.srv, http.MethodPost, account, "api/graphql/", graphqlBody())
	p.call(p.srv, http.MethodPost, account, "api/graphql/", graphqlBody())
	p.call(p.srv, http.MethodGet, account, "../x", nil)

	mresp, err := http.Get(p.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	metricsText := string(mb)
	if !strings.Contains(metricsText, `irisx_proxy_requests_total{class="2xx",method="GET"}`) ||
		!strings.Contains(metricsText, `irisx_proxy_requests_total{class="4xx",method="POST"}`) {
		t.Errorf("proxy metrics missing:\n%s", metricsText)
	}
	if len(p.tokens.all()) < 2 {
		t.Fatal("the calls minted fewer tokens than expected")
	}
	secrets := append(p.tokens.all(), internalToken, clientID)
	for _, in := range []struct{ name, text string }{{"logs", p.logs.String()}, {"metrics", metricsText}} {
		for _, s := range secrets {
			if strings.Contains(in.text, s) {
				t.Errorf("%s contain %q", in.name, s)
			}
		}
		if in.name == "metrics" && strings.Contains(in.text, account) {
			t.Errorf("metrics name the account")
		}
		if strings.Contains(in.text, "Bearer ") {
			t.Errorf("%s contain an Authorization header", in.name)
		}
	}
}
