package trackunitsim

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// sleepRecorder is an Options.Sleep that records instead of waiting.
type sleepRecorder struct {
	mu    sync.Mutex
	slept []time.Duration
}

func (r *sleepRecorder) Sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slept = append(r.slept, d)
	return ctx.Err()
}

func (r *sleepRecorder) Slept() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.slept...)
}

func TestFaultAnswers(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	s.AddClient("0oaF", "sec", nil)
	form := appTokenForm("0oaF", "sec", "asset.view")
	tests := []struct {
		name        string
		fault       Fault
		wantStatus  int
		wantHeaders map[string]string
		wantBody    map[string]any // errorId / error_description checked for presence only
	}{
		{"503", Fault{Status: 503}, 503, nil, map[string]any{"error": "temporarily_unavailable"}},
		{"500", Fault{Status: 500}, 500, nil, map[string]any{"error": "server_error"}},
		{"429 retry-after", Fault{Status: 429, RetryAfter: "2"}, 429, map[string]string{
			"Retry-After": "2", "X-Rate-Limit-Remaining": "0",
			"X-Rate-Limit-Reset": strconv.FormatInt(t0.Add(2*time.Second).Unix(), 10),
		}, map[string]any{"error": "temporarily_unavailable"}},
		{"invalid_client code", Fault{ErrorCode: "invalid_client"}, 401, nil, map[string]any{"error": "invalid_client"}},
		{"invalid_scope code", Fault{ErrorCode: "invalid_scope"}, 400, nil, map[string]any{"error": "invalid_scope"}},
		{"invalid_grant with status", Fault{Status: 400, ErrorCode: "invalid_grant"}, 400, nil, map[string]any{"error": "invalid_grant"}},
		{"okta shape", Fault{ErrorCode: "invalid_client", OktaShape: true}, 401, nil,
			map[string]any{"errorCode": "invalid_client", "errorLink": "invalid_client", "errorCauses": []any{}}},
		{"okta 429", Fault{Status: 429, OktaShape: true}, 429, nil,
			map[string]any{"errorCode": "E0000047", "errorLink": "E0000047", "errorCauses": []any{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.InjectFault(EndpointAppToken, tc.fault)
			status, hdr, body := postForm(t, srv.URL, "/apptoken", form, nil)
			if status != tc.wantStatus {
				t.Errorf("status = %d, want %d", status, tc.wantStatus)
			}
			for k, v := range tc.wantHeaders {
				if got := hdr.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			// The variable members must be there; then compare the rest.
			for _, k := range []string{"error_description", "errorSummary", "errorId"} {
				if _, ok := body[k]; ok {
					if v, _ := body[k].(string); v == "" {
						t.Errorf("%s empty", k)
					}
					delete(body, k)
				} else if (k == "error_description") != tc.fault.OktaShape {
					t.Errorf("body lacks %s: %v", k, body)
				}
			}
			if diff := cmp.Diff(tc.wantBody, body); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFaultHTMLBody(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	s.InjectFault(EndpointToken, Fault{Status: 502, HTMLBody: true})
	status, hdr, body := postForm(t, srv.URL, "/token", url.Values{"grant_type": {"password"}}, nil)
	page, _ := body["raw"].(string)
	if status != 502 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") ||
		!strings.HasPrefix(page, "<html>") || !strings.Contains(page, "502 Bad Gateway") {
		t.Errorf("got %d %q %q, want a 502 HTML page", status, hdr.Get("Content-Type"), page)
	}
}

func TestFaultTimesAndClear(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	s.AddClient("0oaT", "sec", nil)
	form := appTokenForm("0oaT", "sec", "asset.view")
	s.InjectFault(EndpointAppToken, Fault{Status: 503, Times: 2})
	var got []int
	for range 3 {
		status, _, _ := postForm(t, srv.URL, "/apptoken", form, nil)
		got = append(got, status)
	}
	if diff := cmp.Diff([]int{503, 503, 200}, got); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	if s.Calls(EndpointAppToken) != 3 || s.ClientCalls("0oaT") != 3 {
		t.Errorf("Calls = %d, ClientCalls = %d, want 3 and 3 (faulted calls count)", s.Calls(EndpointAppToken), s.ClientCalls("0oaT"))
	}

	s.InjectFault(EndpointAppToken, Fault{Status: 500})
	s.InjectFault(EndpointJWKS, Fault{Status: 500})
	s.ClearFaults()
	if status, _, _ := postForm(t, srv.URL, "/apptoken", form, nil); status != 200 {
		t.Errorf("after ClearFaults status = %d, want 200", status)
	}
	if _, err := jwk.Fetch(testkit.Context(t), srv.URL+"/jwks"); err != nil {
		t.Errorf("jwks after ClearFaults: %v", err)
	}
}

func TestFaultJWKS(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	s.InjectFault(EndpointJWKS, Fault{Status: 503, Times: 1})
	if _, err := jwk.Fetch(testkit.Context(t), srv.URL+"/api/marketplace/jwks"); err == nil {
		t.Error("JWKS fetch succeeded during a 503 fault")
	}
	if _, err := jwk.Fetch(testkit.Context(t), srv.URL+"/api/marketplace/jwks"); err != nil {
		t.Errorf("JWKS fetch after the fault: %v", err)
	}
}

func TestFaultLatencyUsesSleep(t *testing.T) {
	rec := &sleepRecorder{}
	s, srv := newTestSim(t, Options{Sleep: rec.Sleep})
	s.AddClient("0oaL", "sec", nil)
	form := appTokenForm("0oaL", "sec", "asset.view")

	s.InjectFault(EndpointAppToken, Fault{Latency: 2 * time.Second})
	if status, _, _ := postForm(t, srv.URL, "/apptoken", form, nil); status != 200 {
		t.Errorf("latency-only fault: status = %d, want 200 after the delay", status)
	}
	s.InjectFault(EndpointAppToken, Fault{Latency: 5 * time.Second, Status: 504})
	if status, _, _ := postForm(t, srv.URL, "/apptoken", form, nil); status != 504 {
		t.Errorf("latency + status: status = %d, want 504", status)
	}
	if diff := cmp.Diff([]time.Duration{2 * time.Second, 5 * time.Second}, rec.Slept()); diff != "" {
		t.Errorf("slept (-want +got):\n%s", diff)
	}
}

func TestFaultLatencyRealTimer(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	s.AddClient("0oaR", "sec", nil)
	form := appTokenForm("0oaR", "sec", "asset.view")
	// A short real delay still answers.
	s.InjectFault(EndpointAppToken, Fault{Latency: 10 * time.Millisecond})
	if status, _, _ := postForm(t, srv.URL, "/apptoken", form, nil); status != 200 {
		t.Errorf("status = %d, want 200", status)
	}
	// A long one outlasts the client, which gives up.
	s.InjectFault(EndpointAppToken, Fault{Latency: time.Hour})
	if err := postWithTimeout(srv.URL+"/apptoken", form.Encode(), 200*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the client's deadline", err)
	}
}

func TestFaultHang(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	s.InjectFault(EndpointToken, Fault{Hang: true})
	if err := postWithTimeout(srv.URL+"/token", "grant_type=password", 200*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the client's deadline", err)
	}

	// Close releases a hanging request by dropping its connection.
	done := make(chan error, 1)
	go func() { done <- postWithTimeout(srv.URL+"/token", "grant_type=password", 15*time.Second) }()
	ctx := testkit.Context(t)
	for s.Calls(EndpointToken) < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("the second request never arrived")
		case <-time.After(5 * time.Millisecond):
		}
	}
	s.Close()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want a dropped connection", err)
		}
	case <-ctx.Done():
		t.Fatal("Close did not release the hanging request")
	}
}

// postWithTimeout POSTs a form and returns the transport error, if any.
func postWithTimeout(u, form string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
