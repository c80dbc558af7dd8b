package api

import (
	"bytes"
	"context"
	"encoding/binary"
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
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
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
	Status  int
	Header  http.Header
	Trailer http.Header
	Body    string
	Log     string
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
	res := w.Result()
	h := res.Header
	h.Del("X-Request-Id")
	// Trailers are compared as the client gets them (res.Trailer): Connect's
	// handler sets them with http.TrailerPrefix, its ErrorWriter (the fast
	// path's errors) announces them in a Trailer header first, and on the
	// wire both are the same trailing HEADERS frame.
	h.Del("Trailer")
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			delete(h, k)
		}
	}
	// The request log line differs in its id and latency; the rest of the
	// log (the "rpc failed" line) must be the same.
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		if !strings.Contains(l, `"msg":"request"`) {
			lines = append(lines, logTime.ReplaceAllString(l, ""))
		}
	}
	return callAnswer{Status: w.Code, Header: h, Trailer: res.Trailer, Body: w.Body.String(), Log: strings.Join(lines, "\n")}
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
	protoMsg := func(m *brokerv1.GetTokenRequest) string {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	grpcMsg := func(m *brokerv1.GetTokenRequest) string { return string(envelope(0, []byte(protoMsg(m)))) }
	grpcPlain := grpcMsg(&brokerv1.GetTokenRequest{IrisAppId: "@irisx/fast-app", AccountId: account})
	grpc := func(body string, header ...string) func() *http.Request {
		return func() *http.Request {
			r := post(body, append([]string{"Content-Type", "application/grpc", "Te", "trailers"}, header...)...)()
			r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
			return r
		}
	}
	protoPlain := protoMsg(&brokerv1.GetTokenRequest{IrisAppId: "@irisx/fast-app", AccountId: account})
	protobuf := func(body string, header ...string) func() *http.Request {
		return post(body, append([]string{"Content-Type", "application/proto"}, header...)...)
	}
	cases = append(cases, []struct {
		name string
		b    Broker
		req  func() *http.Request
	}{
		{"proto", errBroker{tok: tok}, protobuf(protoPlain)},
		{"proto accepts gzip", errBroker{tok: tok}, protobuf(protoPlain, "Accept-Encoding", "gzip", "Connect-Protocol-Version", "1")},
		{"proto app left out", errBroker{tok: tok}, protobuf(protoMsg(&brokerv1.GetTokenRequest{AccountId: account, MinValidSeconds: 30}))},
		{"proto empty", errBroker{tok: tok}, protobuf("")},
		{"proto bad account", errBroker{tok: tok}, protobuf(protoMsg(&brokerv1.GetTokenRequest{AccountId: "x"}))},
		{"proto unknown install", errBroker{err: token.ErrNotFound}, protobuf(protoPlain)},
		{"proto unavailable", errBroker{err: token.ErrUnavailable}, protobuf(protoPlain)},
		// Handed on to Connect:
		{"proto not protobuf", errBroker{tok: tok}, protobuf("\xff\xff\xff")},
		{"proto timeout", errBroker{tok: tok}, protobuf(protoPlain, "Connect-Timeout-Ms", "5000")},
		{"proto gzip body", errBroker{tok: tok}, protobuf(protoPlain, "Content-Encoding", "gzip")},
		{"proto no token", errBroker{tok: tok}, func() *http.Request { r := protobuf(protoPlain)(); r.Header.Del("Authorization"); return r }},
		{"grpc", errBroker{tok: tok}, grpc(grpcPlain)},
		{"grpc+proto", errBroker{tok: tok}, grpc(grpcPlain, "Content-Type", "application/grpc+proto")},
		{"grpc accepts gzip", errBroker{tok: tok}, grpc(grpcPlain, "Grpc-Accept-Encoding", "gzip")},
		{"grpc app left out", errBroker{tok: tok}, grpc(grpcMsg(&brokerv1.GetTokenRequest{AccountId: account, Scopes: []string{"a", "b"}}))},
		{"grpc bad account", errBroker{tok: tok}, grpc(grpcMsg(&brokerv1.GetTokenRequest{AccountId: "x"}))},
		{"grpc unknown install", errBroker{err: token.ErrNotFound}, grpc(grpcPlain)},
		{"grpc unavailable", errBroker{err: token.ErrUnavailable}, grpc(grpcPlain)},
		// Handed on to Connect:
		{"grpc timeout", errBroker{tok: tok}, grpc(grpcPlain, "Grpc-Timeout", "5S")},
		{"grpc accepts others", errBroker{tok: tok}, grpc(grpcPlain, "Grpc-Accept-Encoding", "deflate, gzip")},
		{"grpc encoding", errBroker{tok: tok}, grpc(grpcPlain, "Grpc-Encoding", "gzip")},
		{"grpc compressed flag", errBroker{tok: tok}, grpc("\x01" + grpcPlain[1:])},
		{"grpc two messages", errBroker{tok: tok}, grpc(grpcPlain + grpcPlain)},
		{"grpc truncated", errBroker{tok: tok}, grpc(grpcPlain[:len(grpcPlain)-3])},
		{"grpc empty", errBroker{tok: tok}, grpc("")},
		{"grpc not protobuf", errBroker{tok: tok}, grpc(string(envelope(0, []byte{0xff, 0xff, 0xff})))},
		{"grpc+json", errBroker{tok: tok}, grpc(string(envelope(0, []byte(plain))), "Content-Type", "application/grpc+json")},
		{"grpc over HTTP/1.1", errBroker{tok: tok}, func() *http.Request { r := grpc(grpcPlain)(); r.Proto, r.ProtoMajor = "HTTP/1.1", 1; return r }},
		{"grpc no token", errBroker{tok: tok}, func() *http.Request { r := grpc(grpcPlain)(); r.Header.Del("Authorization"); return r }},
	}...)
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
	msg, _ := proto.Marshal(&brokerv1.GetTokenRequest{AccountId: "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"})
	r := httptest.NewRequest(http.MethodPost, "/irisx.broker.v1.TokenService/GetToken", bytes.NewReader(envelope(0, msg)))
	r.Header.Set("Content-Type", "application/grpc")
	r.ProtoMajor = 2
	w := httptest.NewRecorder()
	f.ServeHTTP(w, r)
	if w.Code != http.StatusOK || w.Result().Trailer.Get("Grpc-Status") != "0" || handedOn != 0 {
		t.Fatalf("gRPC call: status %d, trailers %v, handed on %d times; want it answered by the fast path", w.Code, w.Result().Trailer, handedOn)
	}
	if got := call(string(msg), "application/proto"); got != http.StatusOK || handedOn != 0 {
		t.Fatalf("Connect protobuf call: status %d, handed on %d times; want 200 answered by the fast path", got, handedOn)
	}
	if got := call(`{"accountId":"6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"}`, "application/connect+proto"); got != 299 || handedOn != 1 {
		t.Fatalf("streaming content type: status %d, handed on %d times; want it handed on", got, handedOn)
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

// envelope frames msg as one gRPC length-prefixed message.
func envelope(flags byte, msg []byte) []byte {
	out := []byte{flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg)))
	return append(out, msg...)
}
