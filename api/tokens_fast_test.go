package api

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/token"
)

// errBroker answers every request with err, or with tok when err is nil.
type errBroker struct {
	tok token.Token
	err error
}

func (b errBroker) Token(context.Context, token.Request) (token.Token, error) { return b.tok, b.err }

// passInterceptor does nothing; configured, it turns the fast path off.
type passInterceptor struct{ connect.Interceptor }

func (passInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }
func (passInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// callAnswer is what a client sees of one call, and what the broker logged.
type callAnswer struct {
	Status int
	Header http.Header
	Body   string
	Log    string
}

var logTime = regexp.MustCompile(`"time":"[^"]*",`)

func callInternal(t *testing.T, b Broker, interceptors []connect.Interceptor, req func() *http.Request) callAnswer {
	t.Helper()
	var log bytes.Buffer
	e := NewInternal(InternalDeps{
		Broker: b, InternalTokens: []crypto.Secret{"fast-internal-token"}, AllowedApps: []string{"@irisx/fast-app"},
		Logger: slog.New(slog.NewJSONHandler(&log, nil)), Store: benchStore{}, Verifier: benchVerifier{},
		ConnectInterceptors: interceptors,
	})
	w := httptest.NewRecorder()
	e.ServeHTTP(w, req())
	h := w.Result().Header
	h.Del("X-Request-Id")
	// The request log line differs in its id and latency; the rest of the
	// log (the "rpc failed" line) must be the same.
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		if !strings.Contains(l, `"msg":"request"`) {
			lines = append(lines, logTime.ReplaceAllString(l, ""))
		}
	}
	return callAnswer{Status: w.Code, Header: h, Body: w.Body.String(), Log: strings.Join(lines, "\n")}
}

// The fast path answers exactly what Connect's handler answers: status,
// headers, body and the error log line, for successes, errors and every
// request it hands on to Connect.
func TestFastGetTokenMatchesConnect(t *testing.T) {
	tok := token.Token{AccessToken: crypto.Secret("eyJhbGciOiJSUzI1NiJ9.fast-access-token"), TokenType: "Bearer",
		ExpiresAt: time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC), Scopes: []string{"account.view"}}
	const account = "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"
	plain := `{"irisAppId":"@irisx/fast-app","accountId":"` + account + `"}`
	post := func(body string, header ...string) func() *http.Request {
		return func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/irisx.broker.v1.TokenService/GetToken", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Authorization", "Bearer fast-internal-token")
			for i := 0; i+1 < len(header); i += 2 {
				r.Header.Set(header[i], header[i+1])
			}
			return r
		}
	}
	cases := []struct {
		name string
		b    Broker
		req  func() *http.Request
	}{
		{"plain", errBroker{tok: tok}, post(plain)},
		{"charset", errBroker{tok: tok}, post(plain, "Content-Type", "application/json; charset=utf-8")},
		{"protocol version", errBroker{tok: tok}, post(plain, "Connect-Protocol-Version", "1")},
		{"accepts gzip", errBroker{tok: tok}, post(plain, "Accept-Encoding", "gzip")},
		{"app left out", errBroker{tok: tok}, post(`{"accountId":"` + account + `","scopes":["account.view"],"minValidSeconds":60}`)},
		{"upper-case account", errBroker{tok: tok}, post(`{"accountId":"` + strings.ToUpper(account) + `"}`)},
		{"bad account", errBroker{tok: tok}, post(`{"accountId":"not-a-uuid"}`)},
		{"min valid too large", errBroker{tok: tok}, post(`{"accountId":"` + account + `","minValidSeconds":3601}`)},
		{"unknown install", errBroker{err: token.ErrNotFound}, post(plain)},
		{"uninstalled", errBroker{err: token.ErrUninstalled}, post(plain)},
		{"unavailable", errBroker{err: fmt.Errorf("pinging: %w", token.ErrUnavailable)}, post(plain)},
		// Handed on to Connect:
		{"unknown field", errBroker{tok: tok}, post(`{"accountId":"` + account + `","other":1}`)},
		{"snake case", errBroker{tok: tok}, post(`{"account_id":"` + account + `"}`)},
		{"empty body", errBroker{tok: tok}, post(``)},
		{"not JSON", errBroker{tok: tok}, post(`{"accountId":`)},
		{"large body", errBroker{tok: tok}, post(`{"accountId":"` + account + `"` + strings.Repeat(" ", fastBodyMax) + `}`)},
		{"timeout header", errBroker{tok: tok}, post(plain, "Connect-Timeout-Ms", "5000")},
		{"other protocol version", errBroker{tok: tok}, post(plain, "Connect-Protocol-Version", "2")},
		{"gzip body", errBroker{tok: tok}, post(plain, "Content-Encoding", "gzip")},
		{"query", errBroker{tok: tok}, func() *http.Request { r := post(plain)(); r.URL.RawQuery = "x=1"; return r }},
		{"no token", errBroker{tok: tok}, func() *http.Request { r := post(plain)(); r.Header.Del("Authorization"); return r }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fast := callInternal(t, c.b, nil, c.req)
			slow := callInternal(t, c.b, []connect.Interceptor{passInterceptor{}}, c.req)
			if diff := cmp.Diff(slow, fast); diff != "" {
				t.Errorf("fast path differs from Connect (-connect +fast):\n%s", diff)
			}
		})
	}
}

// The fast path answers its calls itself and hands everything else on.
func TestFastGetTokenTakesOnlyPlainCalls(t *testing.T) {
	tok := token.Token{AccessToken: crypto.Secret("eyJ.fast"), TokenType: "Bearer", ExpiresAt: time.Now().Add(time.Hour), Scopes: []string{"a"}}
	var handedOn int
	f := &fastGetToken{svc: &tokenService{broker: errBroker{tok: tok}, allowedApps: []string{"@irisx/fast-app"}, encoded: newEncodedTokens()},
		next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handedOn++; w.WriteHeader(299) }), logger: slog.New(slog.DiscardHandler)}
	call := func(body, contentType string) int {
		r := httptest.NewRequest(http.MethodPost, "/irisx.broker.v1.TokenService/GetToken", strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		w := httptest.NewRecorder()
		f.ServeHTTP(w, r)
		return w.Code
	}
	if got := call(`{"accountId":"6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"}`, "application/json"); got != http.StatusOK || handedOn != 0 {
		t.Fatalf("plain call: status %d, handed on %d times; want 200 answered by the fast path", got, handedOn)
	}
	if got := call(`{"accountId":"6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"}`, "application/proto"); got != 299 || handedOn != 1 {
		t.Fatalf("protobuf call: status %d, handed on %d times; want it handed on", got, handedOn)
	}
	// A body handed on after the fast path read it reaches Connect whole.
	var got string
	f.next = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		_, _ = b.ReadFrom(r.Body)
		got = b.String()
	})
	long := `{"accountId":"x"` + strings.Repeat(" ", 3*fastBodyMax) + `}`
	call(long, "application/json")
	if got != long {
		t.Fatalf("handed-on body: %d bytes, want the %d sent", len(got), len(long))
	}
}
