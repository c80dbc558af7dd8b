package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// testNow is the fake "now" of every test that does not move its clock.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	testIssuer   = "https://iris.trackunit.com"
	testAudience = "irisx-broker"
)

func newClock() *testkit.Clock { return testkit.NewClock(testNow) }

// testKey is a signing key plus the public JWK the test JWKS publishes.
type testKey struct {
	kid  string
	alg  string // the default signing alg
	priv any
	pub  any
	// jwkAlg, when set, is published as the JWK's own alg.
	jwkAlg string
}

// withKID returns a copy of k published under another kid (and JWK alg).
func (k *testKey) withKID(kid, jwkAlg string) *testKey {
	c := *k
	c.kid, c.jwkAlg = kid, jwkAlg
	return &c
}

func (k *testKey) publicJWK(t testing.TB) jwk.Key {
	t.Helper()
	j, err := jwk.FromRaw(k.pub)
	if err != nil {
		t.Fatalf("jwk.FromRaw: %v", err)
	}
	if k.kid != "" {
		_ = j.Set(jwk.KeyIDKey, k.kid)
	}
	if k.jwkAlg != "" {
		_ = j.Set(jwk.AlgorithmKey, k.jwkAlg)
	}
	return j
}

// Keys are expensive under -race; every test shares one set.
var (
	keysOnce                                 sync.Once
	rsaA, rsaB, rsaEvil, ec256, ec384, edKey *testKey
	ec521                                    *testKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		rsaKey := func(kid string) *testKey {
			p, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			return &testKey{kid: kid, alg: "RS256", priv: p, pub: &p.PublicKey}
		}
		ecKey := func(kid, alg string, c elliptic.Curve) *testKey {
			p, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				panic(err)
			}
			return &testKey{kid: kid, alg: alg, priv: p, pub: &p.PublicKey}
		}
		rsaA, rsaB, rsaEvil = rsaKey("rsa-a"), rsaKey("rsa-b"), rsaKey("evil")
		ec256 = ecKey("ec-256", "ES256", elliptic.P256())
		ec384 = ecKey("ec-384", "ES384", elliptic.P384())
		ec521 = ecKey("ec-521", "ES512", elliptic.P521())
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		edKey = &testKey{kid: "ed", alg: "EdDSA", priv: priv, pub: pub}
	})
}

// jwksJSON is the JWKS document publishing keys.
func jwksJSON(t testing.TB, keys ...*testKey) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		if err := set.AddKey(k.publicJWK(t)); err != nil {
			t.Fatalf("AddKey: %v", err)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatalf("marshal JWKS: %v", err)
	}
	return b
}

// validClaims are claims every default test verifier accepts at testNow.
func validClaims() map[string]any {
	return map[string]any{
		"iss":       testIssuer,
		"aud":       testAudience,
		"iat":       testNow.Add(-time.Minute).Unix(),
		"exp":       testNow.Add(5 * time.Minute).Unix(),
		"jti":       "jti-1",
		"accountId": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
		"irisAppId": "@acme/app",
	}
}

// validIdentity is what Verify returns for validClaims.
func validIdentity() *Identity {
	return &Identity{
		IssuedAt:     time.Unix(testNow.Add(-time.Minute).Unix(), 0),
		ExpiresAt:    time.Unix(testNow.Add(5*time.Minute).Unix(), 0),
		JTI:          "jti-1",
		AccountID:    "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
		IrisAppID:    "@acme/app",
		HasAccountID: true,
		HasIrisAppID: true,
	}
}

// with returns a copy of claims with changes applied; a nil value deletes.
func with(claims map[string]any, changes map[string]any) map[string]any {
	out := make(map[string]any, len(claims))
	for k, v := range claims {
		out[k] = v
	}
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// signRaw signs exactly the given header and payload JSON with jwx's signer,
// so tests control every byte of both.
func signRaw(t testing.TB, alg string, key any, header, payload []byte) string {
	t.Helper()
	input := b64url(header) + "." + b64url(payload)
	signer, err := jws.NewSigner(jwa.SignatureAlgorithm(alg))
	if err != nil {
		t.Fatalf("NewSigner(%s): %v", alg, err)
	}
	sig, err := signer.Sign([]byte(input), key)
	if err != nil {
		t.Fatalf("Sign(%s): %v", alg, err)
	}
	return input + "." + b64url(sig)
}

// mint signs claims with k under alg ("" = k.alg). hdr changes the default
// header {"alg","typ","kid"}; a nil value deletes a member.
func mint(t testing.TB, k *testKey, alg string, claims map[string]any, hdr map[string]any) string {
	t.Helper()
	if alg == "" {
		alg = k.alg
	}
	h := map[string]any{"alg": alg, "typ": "JWT"}
	if k.kid != "" {
		h["kid"] = k.kid
	}
	h = with(h, hdr)
	hb, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return signRaw(t, alg, k.priv, hb, pb)
}

// jwksServer is a JWKS endpoint whose answer tests change and whose
// requests they count.
type jwksServer struct {
	*httptest.Server
	hits atomic.Int64

	mu      sync.Mutex
	handler http.HandlerFunc
}

func newJWKSServer(t testing.TB, body []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.serveJSON(body)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		h := s.handler
		s.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(h http.HandlerFunc) {
	s.mu.Lock()
	s.handler = h
	s.mu.Unlock()
}

func (s *jwksServer) serveJSON(body []byte) {
	s.set(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

// recObserver records Observer events; fetches also go to a channel so that
// tests can wait for Run to finish a fetch.
type recObserver struct {
	fetches  chan string
	mu       sync.Mutex
	rejected []string
}

func newRecObserver() *recObserver { return &recObserver{fetches: make(chan string, 1000)} }

func (o *recObserver) JWKSFetched(outcome string, _ int) { o.fetches <- outcome }

func (o *recObserver) Rejected(reason string) {
	o.mu.Lock()
	o.rejected = append(o.rejected, reason)
	o.mu.Unlock()
}

// waitFetch waits for Run's next completed fetch and returns its outcome.
func (o *recObserver) waitFetch(t testing.TB) string {
	t.Helper()
	select {
	case out := <-o.fetches:
		return out
	case <-time.After(20 * time.Second):
		t.Fatal("no JWKS fetch completed")
		return ""
	}
}

// harness is a running Verifier with a fake clock, a recording observer
// and a tick channel standing in for Run's refresh timer.
type harness struct {
	v     *Verifier
	clock *testkit.Clock
	obs   *recObserver
	tick  chan time.Time
	srv   *jwksServer
	// afters receives each delay Run asks a timer for, in order.
	afters chan time.Duration
}

// startVerifier builds a Verifier on srv, starts Run and waits for its
// first fetch (whatever its outcome).
func startVerifier(t testing.TB, srv *jwksServer, cfg Config) *harness {
	t.Helper()
	h := &harness{clock: newClock(), obs: newRecObserver(), tick: make(chan time.Time), srv: srv,
		afters: make(chan time.Duration, 1000)}
	cfg.JWKSURL = srv.URL
	cfg.Now = h.clock.Now
	cfg.Observer = h.obs
	v, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	v.after = func(d time.Duration) <-chan time.Time {
		h.afters <- d
		return h.tick
	}
	h.v = v
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		v.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	h.obs.waitFetch(t)
	return h
}

// refresh fires Run's timer and waits for the fetch it causes.
func (h *harness) refresh(t testing.TB) string {
	t.Helper()
	select {
	case h.tick <- time.Time{}:
	case <-time.After(20 * time.Second):
		t.Fatal("Run is not waiting on its timer")
	}
	return h.obs.waitFetch(t)
}

// timerDelays returns the next n delays Run asks its timer for. Run arms
// the timer after reporting the fetch, so tests wait for it here.
func (h *harness) timerDelays(t testing.TB, n int) []time.Duration {
	t.Helper()
	var got []time.Duration
	for len(got) < n {
		select {
		case d := <-h.afters:
			got = append(got, d)
		case <-time.After(20 * time.Second):
			t.Fatalf("Run armed %d timers, want %d", len(got), n)
		}
	}
	return got
}
