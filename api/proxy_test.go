package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

func TestProxyForwardsFaithfully(t *testing.T) {
	p := newProxyHarness(t)
	account, clientID := p.installed()
	body := `{"name":"excavator 7","tags":["a","b"]}`
	resp, got := p.call(p.srv, http.MethodPatch, account, "api/echo/assets/a%20b?x=1&y=%2F&x=2", strings.NewReader(body),
		"Content-Type", "application/json; charset=utf-8",
		"Accept", "application/json",
		"X-Custom", "kept",
		"X-Request-Id", "req-1",
		"Cookie", "session=caller",
		"Irisx-Scopes", "asset.view",
		"Irisx-Debug", "dropped",
		"Connection", "X-Hop",
		"X-Hop", "dropped",
		"Proxy-Authorization", "Basic dropped",
		"X-Forwarded-For", "10.9.9.9",
	)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, got)
	}
	reqs := p.sim.IRISRequests()
	if len(reqs) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(reqs))
	}
	in := reqs[0]
	simHost := strings.TrimPrefix(p.simURL, "http://")
	if in.Method != http.MethodPatch || in.Path != "/api/echo/assets/a b" || in.Query != "x=1&y=%2F&x=2" ||
		in.Body != body || in.Host != simHost {
		t.Errorf("upstream got %s %q ?%q host %q body %q", in.Method, in.Path, in.Query, in.Host, in.Body)
	}
	for k, want := range map[string]string{
		"Content-Type": "application/json; charset=utf-8", "Accept": "application/json",
		"X-Custom": "kept", "X-Request-Id": "req-1",
	} {
		if got := in.Header.Get(k); got != want {
			t.Errorf("upstream header %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"Cookie", "Irisx-Scopes", "Irisx-Debug", "X-Hop", "Proxy-Authorization", "X-Forwarded-For", "Forwarded"} {
		if v, ok := in.Header[k]; ok {
			t.Errorf("upstream got header %s: %q", k, v)
		}
	}
	if in.Subject != clientID || strings.Join(in.Scopes, " ") != "asset.view" {
		t.Errorf("upstream token for %q %v, want the install's client %q with asset.view", in.Subject, in.Scopes, clientID)
	}
	if in.Header.Get("Authorization") == "Bearer "+internalToken || len(p.tokens.all()) != 1 ||
		in.Header.Get("Authorization") != "Bearer "+p.tokens.all()[0] {
		t.Errorf("upstream Authorization is not the account's token")
	}
	// The answer: status, body and headers as sent, less Set-Cookie.
	if resp.Header.Get("X-Iris-Echo") != "1" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("answer headers lost: %v", resp.Header)
	}
	if v := resp.Header.Values("Set-Cookie"); len(v) != 0 {
		t.Errorf("answer has Set-Cookie %q", v)
	}
	if v := resp.Header.Get("X-Iris-Hop"); v != "" {
		t.Errorf("answer has the upstream's hop-by-hop X-Iris-Hop %q", v)
	}
	var echoed trackunitsim.IRISRequest
	if err := json.Unmarshal([]byte(got), &echoed); err != nil || echoed.Body != body || echoed.Method != http.MethodPatch {
		t.Errorf("answer body %q", got)
	}
}

func TestProxyAppFromHeaderAndDefaultScopes(t *testing.T) {
	p := newProxyHarness(t)
	account, _ := p.installed()
	resp, body := p.call(p.srv, http.MethodGet, account, "api/echo", nil, "Irisx-App-Id", testApp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if got := p.sim.IRISRequests()[0].Scopes; strings.Join(got, " ") != "asset.view" { // the harness's DEFAULT_SCOPES
		t.Errorf("scopes %v, want the default", got)
	}
	resp, body = p.call(p.srv, http.MethodGet, account, "api/echo", nil, "Irisx-App-Id", "@other/app")
	wantErrorBody(t, resp, body, http.StatusNotFound, "not_found")
}

func TestProxyNeedsTheInternalToken(t *testing.T) {
	p := newProxyHarness(t)
	account, _ := p.installed()
	for name, auth := range map[string]string{"none": "", "wrong": "Bearer nope", "admin": "Bearer " + adminToken, "basic": "Basic " + internalToken} {
		req, _ := http.NewRequest(http.MethodGet, p.srv.URL+"/iris/accounts/"+account+"/api/echo", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Run(name, func(t *testing.T) { wantErrorBody(t, resp, string(b), http.StatusUnauthorized, "unauthenticated") })
	}
	if n := p.tokens.minted.Load(); n != 0 || p.upstreamCalls() != 0 {
		t.Errorf("unauthenticated calls minted %d tokens and reached upstream %d times", n, p.upstreamCalls())
	}
}

func TestProxyRetries401OnceWithANewToken(t *testing.T) {
	p := newProxyHarness(t)
	account, _ := p.installed()
	p.sim.InjectFault(trackunitsim.EndpointIRIS, trackunitsim.Fault{Status: http.StatusUnauthorized, Times: 1})
	resp, body := p.call(p.srv, http.MethodPost, account, "api/echo", strings.NewReader("payload"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if n := p.sim.Calls(trackunitsim.EndpointIRIS); n != 2 {
		t.Errorf("upstream calls %d, want 2", n)
	}
	if p.tokens.forgets.Load() != 1 || p.sim.Calls(trackunitsim.EndpointAppToken) != 2 {
		t.Errorf("forgets %d, mints at Trackunit %d; want 1 and 2", p.tokens.forgets.Load(), p.sim.Calls(trackunitsim.EndpointAppToken))
	}
	if reqs := p.sim.IRISRequests(); len(reqs) != 1 || reqs[0].Body != "payload" {
		t.Errorf("the retry did not carry the body: %+v", reqs)
	}
	if toks := p.tokens.all(); len(toks) != 2 || toks[0] == toks[1] {
		t.Errorf("the retry did not use a newly minted token")
	}
}

func TestProxyPassesASecond401On(t *testing.T) {
	p := newProxyHarness(t)
	account, _ := p.installed()
	p.sim.InjectFault(trackunitsim.EndpointIRIS, trackunitsim.Fault{Status: http.StatusUnauthorized})
	resp, _ := p.call(p.srv, http.MethodGet, account, "api/echo", nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want the upstream's 401", resp.StatusCode)
	}
	if n := p.sim.Calls(trackunitsim.EndpointIRIS); n != 2 {
		t.Errorf("upstream calls %d, want exactly 2 (one retry)", n)
	}
}

func TestProxyDoesNotRetryALargeBody(t *testing.T) {
	p := newProxyHarness(t)
	account, _ := p.installed()
	p.sim.InjectFault(trackunitsim.EndpointIRIS, trackunitsim.Fault{Status: http.StatusUnauthorized, Times: 1})
	big := bytes.Repeat([]byte("b"), 2<<20)
	resp, _ := p.call(p.srv, http.MethodPut, account, "api/echo", bytes.NewReader(big))
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want the 401 passed on", resp.StatusCode)
	}
	if n := p.sim.Calls(trackunitsim.EndpointIRIS); n != 1 || p.tokens.forgets.Load() != 0 {
		t.Errorf("upstream calls %d, forgets %d; want 1 and 0", n, p.tokens.forgets.Load())
	}
}

func TestProxyPassesREST429On(t *testing.T) {
	p := newProxyHarness(t)
	account, _ := p.installed()
	p.sim.InjectFault(trackunitsim.EndpointIRIS, trackunitsim.Fault{Status: http.StatusTooManyRequests, RetryAfter: "7", Times: 1})
	resp, _ := p.call(p.srv, http.MethodGet, account, "api/echo", nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "7" {
		t.Fatalf("status %d Retry-After %q, want 429 and 7", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// A REST 429 is Trackunit's to enforce: nothing is held.
	if resp, _ := p.call(p.srv, http.MethodGet, account, "api/echo", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("next call %d, want 200", resp.StatusCode)
	}
}

func TestProxyRateLimitedHoldAcrossReplicas(t *testing.T) {
	p := newProxyHarness(t)
	a := p.srv
	b := p.secondReplica()
	account, _ := p.installed()
	other, _ := p.installed()

	// Replica b looks first, so its "no hold" is cached when a sees the
	// RATE_LIMITED; a has written the hold before its answer went out, and
	// b's cached look is trusted only for a second.
	if resp, _ := p.call(b, http.MethodPost, account, "api/graphql/", graphqlBody()); resp.StatusCode != http.StatusOK {
		t.Fatalf("first call %d", resp.StatusCode)
	}
	p.sim.RateLimitGraphQL(90_500*time.Millisecond, 1)
	resp, body := p.call(a, http.MethodPost, account, "api/graphql/", graphqlBody())
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"RATE_LIMITED"`) {
		t.Fatalf("the RATE_LIMITED answer was not passed on: %d %s", resp.StatusCode, body)
	}
	p.clock.Advance(1500 * time.Millisecond)
	calls := p.sim.Calls(trackunitsim.EndpointGraphQL)
	for _, s := range []*httptest.Server{a, b} {
		resp, body := p.call(s, http.MethodPost, account, "api/graphql/", graphqlBody())
		wantErrorBody(t, resp, body, http.StatusTooManyRequests, "rate_limited")
		// 90.5 s from the answer, 1.5 s of them gone: 89 s, rounded up.
		if got := resp.Header.Get("Retry-After"); got != "89" {
			t.Errorf("replica %s: Retry-After %q, want 89", s.URL, got)
		}
	}
	if n := p.sim.Calls(trackunitsim.EndpointGraphQL); n != calls {
		t.Errorf("held calls reached Trackunit: %d calls, want %d", n, calls)
	}
	// Other accounts and the account's REST calls are unaffected.
	if resp, _ := p.call(b, http.MethodPost, other, "api/graphql/", graphqlBody()); resp.StatusCode != http.StatusOK {
		t.Errorf("another account's GraphQL call: %d", resp.StatusCode)
	}
	if resp, _ := p.call(b, http.MethodGet, account, "api/echo", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("the account's REST call: %d", resp.StatusCode)
	}
	// Once the reset time has passed, calls reach Trackunit again.
	p.clock.Advance(89 * time.Second)
	if resp, body := p.call(b, http.MethodPost, account, "api/graphql/", graphqlBody()); resp.StatusCode != http.StatusOK {
		t.Errorf("after the reset: %d %s", resp.StatusCode, body)
	}
	if resp, body := p.call(a, http.MethodPost, account, "api/graphql/", graphqlBody()); resp.StatusCode != http.StatusOK {
		t.Errorf("after the reset, replica a: %d %s", resp.StatusCode, body)
	}
}
