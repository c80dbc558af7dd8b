package trackunitsim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestIRISStandIn(t *testing.T) {
	s := newSim(Options{})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	s.AddClient("0oaclient", "secret", nil)
	s.mu.Lock()
	tok := s.issueAccessLocked("0oaclient", []string{"asset.view"})
	s.mu.Unlock()

	send := func(method, path, bearer, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		req.Header.Set("X-Custom", "v")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	for _, bearer := range []string{"", "not-minted-here"} {
		if resp, _ := send(http.MethodGet, "/api/echo", bearer, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("bearer %q: %d, want 401", bearer, resp.StatusCode)
		}
	}
	if len(s.IRISRequests()) != 0 {
		t.Error("refused requests were recorded")
	}

	resp, body := send(http.MethodPut, "/api/echo/x?a=1", tok, "hello")
	var got IRISRequest
	if err := json.Unmarshal([]byte(body), &got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got.Method != http.MethodPut || got.Path != "/api/echo/x" || got.Query != "a=1" || got.Body != "hello" ||
		got.Subject != "0oaclient" || got.Header.Get("X-Custom") != "v" {
		t.Errorf("echo %+v", got)
	}
	if resp.Header.Get("X-Iris-Hop") != "1" || resp.Header.Get("Set-Cookie") == "" {
		t.Errorf("the echo lacks the headers a proxy must strip: %v", resp.Header)
	}
	if strings.Contains(body, tok) || got.Header.Get("Authorization") != "Bearer [redacted]" {
		t.Error("the echo shows the bearer token")
	}
	if rec := s.IRISRequests(); len(rec) != 1 || rec[0].Header.Get("Authorization") != "Bearer "+tok {
		t.Errorf("recorded %+v", rec)
	}

	s.RateLimitGraphQL(2500*time.Millisecond, 1)
	_, body = send(http.MethodPost, "/api/graphql/", tok, `{"query":"{ a }"}`)
	if !strings.Contains(body, `"code":"RATE_LIMITED"`) || !strings.Contains(body, `"resetIn":2500`) {
		t.Errorf("rate limited answer %s", body)
	}
	if _, body = send(http.MethodPost, "/api/graphql/", tok, `{"query":"{ a }"}`); !strings.Contains(body, `"query":"{ a }"`) {
		t.Errorf("after the one RATE_LIMITED: %s", body)
	}
	if s.Calls(EndpointGraphQL) != 2 || s.Calls(EndpointIRIS) != 3 {
		t.Errorf("calls graphql %d iris %d", s.Calls(EndpointGraphQL), s.Calls(EndpointIRIS))
	}
	// Through the control API, and as a fault.
	if resp, _ := send(http.MethodPost, "/sim/iris/rate-limit", "", `{"resetInMs":1000}`); resp.StatusCode != http.StatusNoContent {
		t.Errorf("control: %d", resp.StatusCode)
	}
	if _, body = send(http.MethodPost, "/api/graphql", tok, `{}`); !strings.Contains(body, "RATE_LIMITED") {
		t.Errorf("control rate limit not applied: %s", body)
	}
	if resp, _ := send(http.MethodPost, "/sim/faults", "", `{"endpoint":"iris","status":429,"retryAfter":"3","times":1}`); resp.StatusCode/100 != 2 {
		t.Errorf("fault control: %d", resp.StatusCode)
	}
	if resp, _ := send(http.MethodGet, "/api/echo", tok, ""); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "3" {
		t.Errorf("fault: %d %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}
