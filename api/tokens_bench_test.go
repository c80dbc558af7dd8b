package api

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/token"
)

// fixedBroker answers every request with the same token, as a cache hit
// does.
type fixedBroker struct{ tok token.Token }

func (b fixedBroker) Token(context.Context, token.Request) (token.Token, error) { return b.tok, nil }

// benchStore and benchVerifier are what NewInternal needs besides the
// broker; the token path never calls them.
type benchStore struct{ InternalStore }

func (benchStore) Ping(context.Context) error { return nil }

type benchVerifier struct{ Verifier }

func (benchVerifier) Ready() bool { return true }

// BenchmarkGetTokenCached measures the internal handler's server side of a
// cached Connect-JSON GetToken: bearer check, Connect, interceptor, the
// request log line (JSON, to a discarding writer) and the middleware. The
// HTTP/1.1 reading and writing are net/http's and not included.
func BenchmarkGetTokenCached(b *testing.B) {
	const bearerToken = "bench-internal-token"
	tok := token.Token{AccessToken: crypto.Secret("eyJhbGciOiJSUzI1NiJ9.bench-access-token-0123456789abcdef"),
		TokenType: "Bearer", ExpiresAt: time.Now().Add(time.Hour), Scopes: []string{"account.view", "asset.view"}}
	e := NewInternal(InternalDeps{
		Broker: fixedBroker{tok: tok}, InternalTokens: []crypto.Secret{bearerToken},
		AllowedApps: []string{"@irisx/bench-app"},
		Logger:      slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Store:       benchStore{}, Verifier: benchVerifier{},
	})
	body := []byte(`{"irisAppId":"@irisx/bench-app","accountId":"6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/irisx.broker.v1.TokenService/GetToken", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+bearerToken)
		w := httptest.NewRecorder()
		e.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
	}
}

// switchBroker answers with whichever token it holds now.
type switchBroker struct{ tok atomic.Pointer[token.Token] }

func (b *switchBroker) Token(context.Context, token.Request) (token.Token, error) {
	return *b.tok.Load(), nil
}

// A GetToken answered from the kept encoding is byte for byte what
// Connect's own codecs produce, in JSON and protobuf, on every call; a new
// token (or a new expiry or scopes for the same access token) is answered
// with its own fields, never the kept bytes of the old one.
func TestGetTokenEncodedResponses(t *testing.T) {
	const bearerToken = "test-internal-token"
	exp := time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)
	first := token.Token{AccessToken: "access-one", TokenType: "Bearer", ExpiresAt: exp, Scopes: []string{"asset.view"}}
	br := &switchBroker{}
	br.tok.Store(&first)
	e := NewInternal(InternalDeps{Broker: br, InternalTokens: []crypto.Secret{bearerToken},
		AllowedApps: []string{"@irisx/bench-app"}, Store: benchStore{}, Verifier: benchVerifier{}})
	call := func(contentType string, body []byte) []byte {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/irisx.broker.v1.TokenService/GetToken", bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Authorization", "Bearer "+bearerToken)
		w := httptest.NewRecorder()
		e.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", contentType, w.Code, w.Body)
		}
		return w.Body.Bytes()
	}
	reqMsg := &brokerv1.GetTokenRequest{IrisAppId: "@irisx/bench-app", AccountId: "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"}
	protoReq, err := proto.Marshal(reqMsg)
	if err != nil {
		t.Fatal(err)
	}
	jsonReq, err := protojson.Marshal(reqMsg)
	if err != nil {
		t.Fatal(err)
	}
	check := func(tok token.Token) {
		t.Helper()
		want := tokenResponse(tok)
		wantJSON, _ := protojson.Marshal(want)
		wantProto, _ := proto.Marshal(want)
		for i := range 3 {
			if got := call("application/json", jsonReq); !bytes.Equal(got, wantJSON) {
				t.Errorf("JSON call %d = %s, want %s", i, got, wantJSON)
			}
			if got := call("application/proto", protoReq); !bytes.Equal(got, wantProto) {
				t.Errorf("proto call %d = %x, want %x", i, got, wantProto)
			}
		}
	}
	check(first)
	second := token.Token{AccessToken: "access-two", TokenType: "Bearer", ExpiresAt: exp.Add(time.Hour), Scopes: []string{"asset.view"}}
	br.tok.Store(&second)
	check(second)
	// The same access token with other fields is not answered from the old bytes.
	changed := second
	changed.ExpiresAt = exp.Add(2 * time.Hour)
	changed.Scopes = []string{"asset.view", "account.view"}
	br.tok.Store(&changed)
	check(changed)
}

// BenchmarkGetTokenGRPC is the cached GetToken over gRPC (h2c, 8
// connections, calls from parallel goroutines) against the internal
// handler served by NewServer's HTTP/2 configuration, client in the same
// process: profile it with -cpuprofile and focus on the server
// (http2serverConn) to see where a gRPC call's server CPU goes.
func BenchmarkGetTokenGRPC(b *testing.B) {
	const bearerToken = "bench-internal-token"
	tok := token.Token{AccessToken: crypto.Secret("eyJhbGciOiJSUzI1NiJ9.bench-access-token-0123456789abcdef"),
		TokenType: "Bearer", ExpiresAt: time.Now().Add(time.Hour), Scopes: []string{"account.view", "asset.view"}}
	e := NewInternal(InternalDeps{
		Broker: fixedBroker{tok: tok}, InternalTokens: []crypto.Secret{bearerToken},
		AllowedApps: []string{"@irisx/bench-app"}, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Store: benchStore{}, Verifier: benchVerifier{},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(e, true)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	var clients []brokerv1connect.TokenServiceClient
	for range 8 {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		hc := &http.Client{Transport: &http.Transport{Protocols: &p}}
		clients = append(clients, brokerv1connect.NewTokenServiceClient(hc, "http://"+ln.Addr().String(), connect.WithGRPC()))
	}
	var next atomic.Int64
	b.SetParallelism(32) // 64 concurrent calls on 2 CPUs, as the bench
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := clients[next.Add(1)%int64(len(clients))]
		for pb.Next() {
			req := connect.NewRequest(&brokerv1.GetTokenRequest{IrisAppId: "@irisx/bench-app", AccountId: "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"})
			req.Header().Set("Authorization", "Bearer "+bearerToken)
			if _, err := c.GetToken(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A gRPC client that accepts gzip (Connect's does by default) gets the
// token answer uncompressed: it is far below tokenCompressMinBytes.
func TestGetTokenGRPCAnswerUncompressed(t *testing.T) {
	const bearerToken = "test-internal-token"
	tok := token.Token{AccessToken: "access-one", TokenType: "Bearer", ExpiresAt: time.Now().Add(time.Hour), Scopes: []string{"asset.view"}}
	e := NewInternal(InternalDeps{Broker: fixedBroker{tok: tok}, InternalTokens: []crypto.Secret{bearerToken},
		AllowedApps: []string{"@irisx/bench-app"}, Store: benchStore{}, Verifier: benchVerifier{}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(e, true)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: &p}}
	msg, err := proto.Marshal(&brokerv1.GetTokenRequest{IrisAppId: "@irisx/bench-app", AccountId: "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"})
	if err != nil {
		t.Fatal(err)
	}
	frame := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...) // uncompressed, length (< 256)
	req, err := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/irisx.broker.v1.TokenService/GetToken", bytes.NewReader(frame))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Grpc-Accept-Encoding", "gzip")
	req.Header.Set("Authorization", "Bearer "+bearerToken)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || len(body) < 5 || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("%d, %d bytes, grpc-status %q", resp.StatusCode, len(body), resp.Trailer.Get("Grpc-Status"))
	}
	if body[0] != 0 {
		t.Errorf("the answer's message is flagged compressed (%#x)", body[0])
	}
	var got brokerv1.GetTokenResponse
	if err := proto.Unmarshal(body[5:], &got); err != nil || got.GetAccessToken() != "access-one" {
		t.Errorf("answer %v, %v", &got, err)
	}
}
