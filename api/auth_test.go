package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// requireBearer over a union of sets (EventService: admin or internal
// tokens) admits a token of either set and nothing else, and never calls
// the handler for a refused request.
func TestRequireBearerUnion(t *testing.T) {
	internal := newTokenSet([]crypto.Secret{"internal-token-aaaaaaaa"})
	admin := newTokenSet([]crypto.Secret{"admin-token-bbbbbbbbbbb"})
	called := 0
	h := requireBearer(internal.union(admin), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called++
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	for token, ok := range map[string]bool{
		"internal-token-aaaaaaaa": true, "admin-token-bbbbbbbbbbb": true,
		"": false, "internal-token-aaaaaaa": false, "admin-token-bbbbbbbbbbbb": false,
	} {
		before := called
		req := httptest.NewRequest(http.MethodPost, "/irisx.broker.v1.EventService/ListEvents", strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		admitted := called > before
		if admitted != ok {
			t.Errorf("token %q: admitted %v, want %v", token, admitted, ok)
		}
		if !ok && (rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), `"code":"unauthenticated"`)) {
			t.Errorf("token %q: %d %s", token, rec.Code, rec.Body.String())
		}
	}
	if len(internal) != 1 || len(admin) != 1 {
		t.Error("union changed its operands")
	}
}

func TestNewServerLimits(t *testing.T) {
	s := NewServer(http.NotFoundHandler(), true)
	if s.HTTP2 == nil || s.HTTP2.MaxConcurrentStreams != h2MaxConcurrentStreams || s.HTTP2.MaxReadFrameSize != h2MaxReadFrameSize ||
		!s.Protocols.UnencryptedHTTP2() || s.ReadHeaderTimeout == 0 || s.WriteTimeout == 0 || s.IdleTimeout == 0 {
		t.Errorf("h2c server: %+v", s)
	}
	if p := NewServer(http.NotFoundHandler(), false); p.Protocols != nil || p.ReadTimeout == 0 {
		t.Errorf("plain server: %+v", p)
	}
}
