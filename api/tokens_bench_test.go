package api

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
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
