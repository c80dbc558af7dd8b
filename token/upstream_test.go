package token

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testkit"

	"github.com/google/go-cmp/cmp"
)

const htmlPage = "<html><body><h1>502 Bad Gateway</h1></body></html>"

func jsonReply(status int, body string) reply {
	return reply{Raw: true, Status: status, ContentType: "application/json", Body: body}
}

func TestRetryMatrix(t *testing.T) {
	tests := []struct {
		name       string
		script     []reply
		want       error // nil: a token
		wantCalls  int64
		wantSleeps []time.Duration // jitter 0.5: backoff is half of 200ms, 400ms
		wantMarks  int
		outcomes   []string
	}{
		{"500 three times", []reply{jsonReply(500, `{}`), jsonReply(500, `{}`), jsonReply(500, `{}`)},
			ErrUnavailable, 3, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}, 0,
			[]string{"server_error", "server_error", "server_error"}},
		{"503 then ok", []reply{jsonReply(503, `{"error":"temporarily_unavailable"}`)},
			nil, 2, []time.Duration{100 * time.Millisecond}, 0, []string{"server_error", "ok"}},
		{"429 with Retry-After seconds", []reply{{Raw: true, Status: 429, ContentType: "application/json", Body: `{"errorCode":"E0000047","errorSummary":"API call exceeded rate limit"}`, Header: map[string]string{"Retry-After": "3"}}},
			nil, 2, []time.Duration{3 * time.Second}, 0, []string{"rate_limited", "ok"}},
		{"429 Retry-After capped", []reply{
			{Raw: true, Status: 429, Header: map[string]string{"Retry-After": "120"}},
			{Raw: true, Status: 429, Header: map[string]string{"Retry-After": "99999999999999999"}},
			{Raw: true, Status: 429, Header: map[string]string{"Retry-After": "1"}}},
			ErrUnavailable, 3, []time.Duration{10 * time.Second, 10 * time.Second}, 0, nil},
		{"429 Retry-After HTTP-date", []reply{{Raw: true, Status: 429, Header: map[string]string{"Retry-After": epoch.Add(7 * time.Second).Format(http.TimeFormat)}}},
			nil, 2, []time.Duration{7 * time.Second}, 0, nil},
		{"429 Okta X-Rate-Limit-Reset", []reply{{Raw: true, Status: 429, Header: map[string]string{"X-Rate-Limit-Reset": "1893553450"}}}, // epoch + 5s
			nil, 2, []time.Duration{5 * time.Second}, 0, nil},
		{"429 without Retry-After backs off", []reply{{Raw: true, Status: 429}},
			nil, 2, []time.Duration{100 * time.Millisecond}, 0, nil},
		{"502 HTML page", []reply{{Raw: true, Status: 502, ContentType: "text/html", Body: htmlPage}, {Raw: true, Status: 502, ContentType: "text/html", Body: htmlPage}},
			nil, 3, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}, 0, []string{"server_error", "server_error", "ok"}},
		{"404 HTML page from a proxy", []reply{{Raw: true, Status: 404, ContentType: "text/html", Body: htmlPage}},
			nil, 2, []time.Duration{100 * time.Millisecond}, 0, []string{"bad_response", "ok"}},
		{"200 HTML page", []reply{{Raw: true, Status: 200, ContentType: "text/html", Body: htmlPage}},
			nil, 2, []time.Duration{100 * time.Millisecond}, 0, []string{"bad_response", "ok"}},
		{"200 without access_token", []reply{jsonReply(200, `{"token_type":"Bearer"}`)},
			nil, 2, []time.Duration{100 * time.Millisecond}, 0, []string{"bad_response", "ok"}},
		{"408", []reply{{Raw: true, Status: 408}}, nil, 2, []time.Duration{100 * time.Millisecond}, 0, nil},
		{"invalid_scope", []reply{jsonReply(400, `{"error":"invalid_scope","error_description":"The requested scope is invalid."}`)},
			ErrInvalidScope, 1, nil, 0, []string{"invalid_scope"}},
		{"invalid_client, RFC 6749 shape", []reply{jsonReply(401, `{"error":"invalid_client","error_description":"Client authentication failed."}`)},
			ErrCredentialsRejected, 1, nil, 1, []string{"invalid_client"}},
		{"invalid_client, Okta shape", []reply{jsonReply(400, `{"errorCode":"invalid_client","errorSummary":"Invalid value for 'client_id' parameter.","errorId":"oaeXYZ"}`)},
			ErrCredentialsRejected, 1, nil, 1, []string{"invalid_client"}},
		{"401 without a body", []reply{{Raw: true, Status: 401, ContentType: "text/html", Body: htmlPage}},
			ErrCredentialsRejected, 1, nil, 1, nil},
		{"other 4xx OAuth error is not retried", []reply{jsonReply(400, `{"error":"unauthorized_client"}`)},
			ErrUnavailable, 1, nil, 0, []string{"client_error"}},
		{"Okta E-code on 403 is not retried", []reply{jsonReply(403, `{"errorCode":"E0000006","errorSummary":"You do not have permission"}`)},
			ErrUnavailable, 1, nil, 0, []string{"client_error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.st.install(testApp, "acct-1", testSecret)
			e.up.setScript(tt.script...)
			tok, err := e.b.Token(testkit.Context(t), req("acct-1"))
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("err = %v, want a token", err)
			case tt.want == nil && tok.AccessToken.Reveal() != e.up.token(int(tt.wantCalls)):
				t.Errorf("token = %s, want %s", tok.AccessToken.Reveal(), e.up.token(int(tt.wantCalls)))
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if got := e.up.calls(); got != tt.wantCalls {
				t.Errorf("upstream calls = %d, want %d", got, tt.wantCalls)
			}
			if diff := cmp.Diff(tt.wantSleeps, e.sleeps.get()); diff != "" {
				t.Errorf("sleeps (-want +got):\n%s", diff)
			}
			if got := len(e.st.getMarks()); got != tt.wantMarks {
				t.Errorf("credentials marked rejected %d times, want %d", got, tt.wantMarks)
			}
			if tt.outcomes != nil {
				if diff := cmp.Diff(tt.outcomes, e.obs.getOutcomes()); diff != "" {
					t.Errorf("observed outcomes (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestConnectionRefusedIsRetriedThenUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	e := newEnv(t, func(c *Config) { c.AuthURL = "http://" + addr })
	e.st.install(testApp, "acct-1", testSecret)
	_, err = e.b.Token(testkit.Context(t), req("acct-1"))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if diff := cmp.Diff([]string{"network_error", "network_error", "network_error"}, e.obs.getOutcomes()); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}
	if got := len(e.sleeps.get()); got != 2 {
		t.Errorf("sleeps = %d, want 2", got)
	}
	if !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "after 3 attempts") {
		t.Errorf("err = %q, want the cause and the attempts for operators", err)
	}
}

func TestHangingUpstreamCallerReturnsAtItsDeadline(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HTTPClient = &http.Client{Timeout: 100 * time.Millisecond} })
	e.st.install(testApp, "acct-1", testSecret)
	e.up.setAlways(&reply{Hang: true})

	ctx, cancel := context.WithTimeout(testkit.Context(t), 50*time.Millisecond)
	defer cancel()
	_, err := e.b.Token(ctx, req("acct-1"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
	// The shared fetch goes on, detached from the caller, and gives up
	// after MaxAttempts time-outs.
	testkit.WaitFor(t, "three attempts", func() bool { return len(e.obs.getOutcomes()) == 3 })
	testkit.WaitFor(t, "the fetch to record its result", func() bool { return len(e.b.results) == 1 })
	if diff := cmp.Diff([]string{"timeout", "timeout", "timeout"}, e.obs.getOutcomes()); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}
	if got := e.up.calls(); got != 3 {
		t.Errorf("upstream calls = %d, want 3", got)
	}
}

func TestFetchTimeoutBoundsTheSharedFetch(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.HTTPClient = &http.Client{} // no client time-out at all
		c.FetchTimeout = 100 * time.Millisecond
	})
	e.st.install(testApp, "acct-1", testSecret)
	e.up.setAlways(&reply{Hang: true})
	_, err := e.b.Token(testkit.Context(t), req("acct-1"))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if diff := cmp.Diff([]string{"timeout"}, e.obs.getOutcomes()); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}
}

func TestCachedTokenServedDuringOutage(t *testing.T) {
	e := newEnv(t, nil)
	e.st.install(testApp, "acct-1", testSecret)
	ctx := testkit.Context(t)
	first, err := e.b.Token(ctx, req("acct-1"))
	if err != nil {
		t.Fatal(err)
	}
	e.up.setAlways(&reply{Raw: true, Status: 503, ContentType: "text/html", Body: htmlPage})

	e.clock.Advance(time.Hour - 2*time.Minute) // inside the window
	for range 3 {
		tok, err := e.b.Token(ctx, req("acct-1"))
		if err != nil || tok.AccessToken != first.AccessToken {
			t.Fatalf("during outage: token %v err %v, want the cached one", tok.AccessToken.Reveal(), err)
		}
		e.b.bg.Wait()
	}
	// One background refresh (three attempts); the failure pauses the next.
	if got := e.up.calls(); got != 1+3 {
		t.Errorf("upstream calls = %d, want 4", got)
	}
	e.clock.Advance(refreshRetryDelay)
	if _, err := e.b.Token(ctx, req("acct-1")); err != nil {
		t.Fatal(err)
	}
	e.b.bg.Wait()
	if got := e.up.calls(); got != 1+3+3 {
		t.Errorf("upstream calls after the pause = %d, want 7", got)
	}

	r := req("acct-1")
	r.MinValid = 2 * time.Minute // more than is left: not served
	if _, err := e.b.Token(ctx, r); !errors.Is(err, ErrUnavailable) {
		t.Errorf("MinValid beyond the cached token: err = %v, want ErrUnavailable", err)
	}
	e.clock.Advance(2 * time.Minute) // expired
	if _, err := e.b.Token(ctx, req("acct-1")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("after expiry: err = %v, want ErrUnavailable", err)
	}
}

func TestInvalidClientMarksOnceAndStopsUpstreamCalls(t *testing.T) {
	for _, body := range []string{
		`{"error":"invalid_client","error_description":"Client authentication failed."}`,
		`{"errorCode":"invalid_client","errorSummary":"Invalid value for 'client_id' parameter.","errorId":"oae1"}`,
	} {
		t.Run(body[2:7], func(t *testing.T) {
			e := newEnv(t, nil)
			e.st.install(testApp, "acct-1", testSecret)
			ctx := testkit.Context(t)
			// A cached token for another scope set is dropped too.
			if _, err := e.b.Token(ctx, req("acct-1", "account.view")); err != nil {
				t.Fatal(err)
			}
			e.up.setAlways(&reply{Raw: true, Status: 401, ContentType: "application/json", Body: body})
			for i := range 5 {
				_, err := e.b.Token(ctx, req("acct-1"))
				if !errors.Is(err, ErrCredentialsRejected) {
					t.Fatalf("call %d: err = %v, want ErrCredentialsRejected", i, err)
				}
			}
			if _, err := e.b.Token(ctx, req("acct-1", "account.view")); !errors.Is(err, ErrCredentialsRejected) {
				t.Errorf("other scope set: err = %v, want ErrCredentialsRejected", err)
			}
			if got := e.up.calls(); got != 2 {
				t.Errorf("upstream calls = %d, want 2 (one success, one rejection)", got)
			}
			want := []mark{{testApp, "acct-1", 1, "invalid_client"}}
			if diff := cmp.Diff(want, e.st.getMarks()); diff != "" {
				t.Errorf("marks (-want +got):\n%s", diff)
			}

			// A new INSTALLED brings new credentials and an Invalidate.
			e.up.setAlways(nil)
			e.st.install(testApp, "acct-1", "new-secret")
			e.b.Invalidate(testApp, "acct-1")
			if _, err := e.b.Token(ctx, req("acct-1")); err != nil {
				t.Errorf("after reinstall: %v", err)
			}
		})
	}
}

func TestInvalidScopeMarksNothing(t *testing.T) {
	e := newEnv(t, nil)
	e.st.install(testApp, "acct-1", testSecret)
	ctx := testkit.Context(t)
	e.up.setAlways(&reply{Raw: true, Status: 400, ContentType: "application/json", Body: `{"error":"invalid_scope","error_description":"The requested scope is invalid, unknown, or malformed."}`})
	for range 2 {
		if _, err := e.b.Token(ctx, req("acct-1", "account.delete")); !errors.Is(err, ErrInvalidScope) {
			t.Fatalf("err = %v, want ErrInvalidScope", err)
		}
	}
	if got := e.up.calls(); got != 2 {
		t.Errorf("upstream calls = %d, want 2 (not retried, not cached)", got)
	}
	if got := e.st.getMarks(); len(got) != 0 {
		t.Errorf("marks = %v, want none", got)
	}
	e.up.setAlways(nil)
	if _, err := e.b.Token(ctx, req("acct-1", "asset.view")); err != nil {
		t.Errorf("valid scopes afterwards: %v", err)
	}
}

func TestSecretsNeverInErrorsOrLogs(t *testing.T) {
	e := newEnv(t, nil)
	e.st.install(testApp, "acct-1", testSecret)
	ctx := testkit.Context(t)
	var texts []string

	tok, err := e.b.Token(ctx, req("acct-1"))
	if err != nil {
		t.Fatal(err)
	}
	texts = append(texts, fmtAll(tok)...)

	// The endpoint echoes what it was sent: the client id, the secret, both
	// URL-encoded, and a JWT-like string in an error code.
	echo := func(acct string) string {
		return "client " + clientIDFor(acct) + " secret " + testSecret + " enc " + url.QueryEscape(testSecret+"/+") + " " + clientIDFor(acct)
	}
	scripts := []func(echo string) []reply{
		func(echo string) []reply {
			return []reply{jsonReply(401, `{"error":"invalid_client","error_description":"`+echo+`"}`)}
		},
		func(echo string) []reply {
			return []reply{jsonReply(400, `{"errorCode":"E0000001","errorSummary":"`+echo+`"}`)}
		},
		func(echo string) []reply {
			return []reply{jsonReply(400, `{"error":"invalid_scope","error_description":"`+echo+`"}`)}
		},
		func(echo string) []reply {
			return []reply{{Raw: true, Status: 500, ContentType: "text/html", Body: echo}, {Raw: true, Status: 502, ContentType: "text/plain", Body: echo}, {Raw: true, Status: 503, Body: echo}}
		},
		func(echo string) []reply {
			return []reply{{Raw: true, Status: 200, ContentType: "text/html", Body: echo}, jsonReply(200, `{"error":"`+echo+`"}`),
				jsonReply(500, `{"error":"server_error","error_description":"`+echo+`"}`)}
		},
		func(echo string) []reply {
			return []reply{jsonReply(400, `{"error":"`+clientIDFor("acct-xf")+`"}`)}
		},
	}
	for i, script := range scripts {
		acct := "acct-x" + string(rune('a'+i))
		e.st.install(testApp, acct, testSecret)
		e.up.setScript(script(echo(acct))...)
		_, err := e.b.Token(ctx, req(acct))
		if err == nil {
			t.Fatalf("script %d: no error", i)
		}
		texts = append(texts, err.Error())
	}
	texts = append(texts, e.logs.String())
	for _, text := range texts {
		for _, secret := range append([]string{testSecret, url.QueryEscape(testSecret + "/+"), "0oa-client"}, e.up.issued()...) {
			if strings.Contains(text, secret) {
				t.Errorf("%q leaked into %q", secret, text)
			}
		}
	}
	if !strings.Contains(e.logs.String(), "credentials rejected") {
		t.Errorf("logs lack the rejection; logs:\n%s", e.logs.String())
	}
	for _, s := range e.up.getSeen() {
		if s.AuthHeader {
			t.Error("credentials were sent in an Authorization header")
		}
	}
}

func fmtAll(tok Token) []string {
	return []string{
		sprintf("%v", tok), sprintf("%+v", tok), sprintf("%#v", tok), sprintf("%s", tok.AccessToken),
	}
}

func TestTokenResponseVariants(t *testing.T) {
	tests := []struct {
		name       string
		body       reply
		wantType   string
		wantExpiry time.Duration
		wantScopes []string
	}{
		{"granted scopes narrower than asked", jsonReply(200, `{"access_token":"x","token_type":"Bearer","expires_in":1200,"scope":"asset.view"}`),
			"Bearer", 1200 * time.Second, []string{"asset.view"}},
		{"no scope, no type, no expires_in", jsonReply(200, `{"access_token":"x"}`),
			"Bearer", time.Hour, []string{"account.view", "asset.view"}},
		{"form encoded", reply{Raw: true, Status: 200, ContentType: "application/x-www-form-urlencoded", Body: "access_token=x&token_type=bearer&expires_in=600&scope=asset.view+account.view"},
			"bearer", 600 * time.Second, []string{"asset.view", "account.view"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.st.install(testApp, "acct-1", testSecret)
			e.up.setScript(tt.body)
			tok, err := e.b.Token(testkit.Context(t), req("acct-1", "asset.view", "account.view"))
			if err != nil {
				t.Fatal(err)
			}
			got := []any{tok.AccessToken.Reveal(), tok.TokenType, tok.ExpiresAt, tok.Scopes}
			want := []any{"x", tt.wantType, epoch.Add(tt.wantExpiry), tt.wantScopes}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("token (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRetryAfterParsing(t *testing.T) {
	tests := []struct {
		name   string
		header map[string]string
		want   time.Duration
		wantOK bool
	}{
		{"none", nil, 0, false},
		{"seconds", map[string]string{"Retry-After": "4"}, 4 * time.Second, true},
		{"negative seconds", map[string]string{"Retry-After": "-4"}, 0, true},
		{"huge seconds", map[string]string{"Retry-After": "9223372036854775807"}, (1 << 20) * time.Second, true},
		{"date", map[string]string{"Retry-After": epoch.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second, true},
		{"date in the past", map[string]string{"Retry-After": epoch.Add(-time.Hour).Format(http.TimeFormat)}, 0, true},
		{"garbage", map[string]string{"Retry-After": "soon"}, 0, false},
		{"Okta reset", map[string]string{"X-Rate-Limit-Reset": "1893553455"}, 10 * time.Second, true},
		{"Retry-After wins", map[string]string{"Retry-After": "1", "X-Rate-Limit-Reset": "1893553455"}, time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			got, ok := retryAfter(h, epoch)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("retryAfter = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestBackoffFullJitter(t *testing.T) {
	e := newEnv(t, nil)
	for _, r := range []float64{0, 0.999} {
		e.b.rand = func() float64 { return r }
		var got []time.Duration
		for attempt := 1; attempt <= 8; attempt++ {
			got = append(got, e.b.backoff(attempt).Round(time.Millisecond))
		}
		ceil := []time.Duration{200, 400, 800, 1600, 3200, 6400, 10000, 10000}
		for i := range ceil {
			ceil[i] = time.Duration(float64(ceil[i]*time.Millisecond) * r).Round(time.Millisecond)
		}
		if diff := cmp.Diff(ceil, got); diff != "" {
			t.Errorf("rand %v: backoffs (-want +got):\n%s", r, diff)
		}
	}
}
