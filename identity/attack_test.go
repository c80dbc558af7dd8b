package identity

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// defaultConfig is the configuration most tests verify under.
func defaultConfig() Config {
	return Config{
		Issuer:   testIssuer,
		Audience: testAudience,
		Leeway:   60 * time.Second,
		MaxAge:   10 * time.Minute,
	}
}

// defaultKeys is the JWKS most tests publish: several kids, several types,
// and one RSA key carrying its own alg.
func defaultKeys(t testing.TB) []*testKey {
	testKeys(t)
	return []*testKey{rsaA, rsaB.withKID("rsa-b512", "RS512"), ec256, ec384, ec521, edKey}
}

type attack struct {
	name   string
	token  string
	reason string
	// secret is a string the error message must not contain (besides the
	// token's own parts, which are always checked).
	secret string
}

// attackTokens builds every hostile token; the fuzz target seeds from them.
// jkuURL is where jku and x5u headers point.
func attackTokens(t testing.TB, jkuURL string) []attack {
	testKeys(t)
	valid := validClaims()
	good := mint(t, rsaA, "", valid, nil)
	parts := strings.Split(good, ".")
	rawHeader := func(h string) string { return b64url([]byte(h)) }
	payload := parts[1]

	pubDER, err := x509.MarshalPKIXPublicKey(rsaA.pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hs := func(secret []byte) string {
		h, _ := json.Marshal(map[string]any{"alg": "HS256", "typ": "JWT", "kid": "rsa-a"})
		p, _ := json.Marshal(valid)
		return signRaw(t, "HS256", secret, h, p)
	}

	flattened, _ := json.Marshal(map[string]any{
		"protected": parts[0], "payload": payload, "signature": parts[2],
		"header":    map[string]any{"kid": "rsa-a"},
		"accountId": "attacker-account", "exp": 99999999999, "irisAppId": "@evil/app",
	})
	general, _ := json.Marshal(map[string]any{
		"payload":    payload,
		"signatures": []any{map[string]any{"protected": parts[0], "signature": parts[2]}},
	})

	evilJWK := rsaEvil.withKID("rsa-a", "").publicJWK(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evil"},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rsaEvil.pub, rsaEvil.priv)
	if err != nil {
		t.Fatal(err)
	}
	evil := rsaEvil.withKID("rsa-a", "") // the attacker claims our kid
	longKID := strings.Repeat("k", 10<<10)
	ctrlKID := "\x00\x1b[31m\r\nlevel=ERROR msg=pwned\u202e"

	return []attack{
		{name: "alg none", reason: ReasonAlg,
			token: rawHeader(`{"alg":"none","typ":"JWT","kid":"rsa-a"}`) + "." + payload + "."},
		{name: "alg None with signature", reason: ReasonAlg,
			token: rawHeader(`{"alg":"None","kid":"rsa-a"}`) + "." + payload + "." + parts[2]},
		{name: "HS256 keyed with RSA public key PEM", reason: ReasonAlg, token: hs(pubPEM)},
		{name: "HS256 keyed with RSA public key DER", reason: ReasonAlg, token: hs(pubDER)},
		{name: "flattened JSON with forged outer claims", reason: ReasonSerialization, token: string(flattened)},
		{name: "general JSON serialization", reason: ReasonSerialization, token: string(general)},
		{name: "JSON serialization behind Bearer", reason: ReasonSerialization, token: "Bearer " + string(flattened)},
		{name: "jku to attacker, our kid", reason: ReasonSignature,
			token: mint(t, evil, "", valid, map[string]any{"jku": jkuURL + "/jwks.json"})},
		{name: "jku to attacker, attacker kid", reason: ReasonUnknownKID, secret: "attacker-kid",
			token: mint(t, evil.withKID("attacker-kid", ""), "", valid, map[string]any{"jku": jkuURL + "/jwks.json"})},
		{name: "x5u to attacker", reason: ReasonSignature,
			token: mint(t, evil, "", valid, map[string]any{"x5u": jkuURL + "/cert.pem"})},
		{name: "embedded jwk header", reason: ReasonSignature,
			token: mint(t, evil, "", valid, map[string]any{"jwk": evilJWK})},
		{name: "embedded jwk header without kid", reason: ReasonKIDMissing,
			token: mint(t, evil, "", valid, map[string]any{"jwk": evilJWK, "kid": nil})},
		{name: "embedded x5c header", reason: ReasonSignature,
			token: mint(t, evil, "", valid, map[string]any{"x5c": []string{base64.StdEncoding.EncodeToString(certDER)}})},
		{name: "kid path traversal", reason: ReasonUnknownKID, secret: "etc/passwd",
			token: mint(t, rsaA.withKID("../../etc/passwd", ""), "", valid, nil)},
		{name: "kid SQL injection", reason: ReasonUnknownKID, secret: "OR 1=1",
			token: mint(t, rsaA.withKID("' OR 1=1 --", ""), "", valid, nil)},
		{name: "kid 10 KB", reason: ReasonTooLarge, secret: longKID[:64],
			token: mint(t, rsaA.withKID(longKID, ""), "", valid, nil)},
		{name: "kid control characters", reason: ReasonUnknownKID, secret: "pwned",
			token: mint(t, rsaA.withKID(ctrlKID, ""), "", valid, nil)},
		{name: "kid not a string", reason: ReasonMalformed,
			token: mint(t, rsaA, "", valid, map[string]any{"kid": 42})},
		{name: "no kid, several keys", reason: ReasonKIDMissing,
			token: mint(t, rsaA, "", valid, map[string]any{"kid": nil})},
		{name: "exp missing", reason: ReasonExpMissing, token: mint(t, rsaA, "", with(valid, map[string]any{"exp": nil}), nil)},
		{name: "exp string", reason: ReasonClaimType,
			token: mint(t, rsaA, "", with(valid, map[string]any{"exp": "99999999999"}), nil)},
		{name: "exp null", reason: ReasonClaimType,
			token: mint(t, rsaA, "", with(valid, map[string]any{"exp": json.RawMessage("null")}), nil)},
		{name: "exp boolean", reason: ReasonClaimType, token: mint(t, rsaA, "", with(valid, map[string]any{"exp": true}), nil)},
		{name: "exp expired", reason: ReasonExpired,
			token: mint(t, rsaA, "", with(valid, map[string]any{"exp": testNow.Add(-time.Hour).Unix()}), nil)},
		{name: "exp negative", reason: ReasonClaimType, token: mint(t, rsaA, "", with(valid, map[string]any{"exp": -1}), nil)},
		{name: "nbf in the future", reason: ReasonNotYetValid,
			token: mint(t, rsaA, "", with(valid, map[string]any{"nbf": testNow.Add(time.Hour).Unix()}), nil)},
		{name: "iat in the future", reason: ReasonIATFuture,
			token: mint(t, rsaA, "", with(valid, map[string]any{"iat": testNow.Add(time.Hour).Unix()}), nil)},
		{name: "iat older than MaxAge", reason: ReasonTooOld,
			token: mint(t, rsaA, "", with(valid, map[string]any{"iat": testNow.Add(-time.Hour).Unix()}), nil)},
		{name: "wrong iss", reason: ReasonIssuer,
			token: mint(t, rsaA, "", with(valid, map[string]any{"iss": "https://evil.example"}), nil)},
		{name: "iss missing", reason: ReasonIssuer, token: mint(t, rsaA, "", with(valid, map[string]any{"iss": nil}), nil)},
		{name: "wrong aud", reason: ReasonAudience,
			token: mint(t, rsaA, "", with(valid, map[string]any{"aud": "someone-else"}), nil)},
		{name: "aud array without ours", reason: ReasonAudience,
			token: mint(t, rsaA, "", with(valid, map[string]any{"aud": []string{"a", "b"}}), nil)},
		{name: "aud missing", reason: ReasonAudience, token: mint(t, rsaA, "", with(valid, map[string]any{"aud": nil}), nil)},
		{name: "aud number", reason: ReasonClaimType, token: mint(t, rsaA, "", with(valid, map[string]any{"aud": 7}), nil)},
		{name: "accountId not a string", reason: ReasonClaimType,
			token: mint(t, rsaA, "", with(valid, map[string]any{"accountId": 12345}), nil)},
		{name: "ES256 header on an RSA key", reason: ReasonAlg,
			token: mint(t, ec256.withKID("rsa-a", ""), "ES256", valid, nil)},
		{name: "RS256 on a key whose alg is RS512", reason: ReasonAlg,
			token: mint(t, rsaB.withKID("rsa-b512", ""), "RS256", valid, nil)},
		{name: "ES384 header on a P-256 key", reason: ReasonAlg,
			token: mint(t, ec384.withKID("ec-256", ""), "ES384", valid, nil)},
		{name: "EdDSA header on an EC key", reason: ReasonAlg,
			token: mint(t, edKey.withKID("ec-256", ""), "EdDSA", valid, nil)},
		{name: "signed by a key not in the JWKS, same kid", reason: ReasonSignature,
			token: mint(t, evil, "", valid, nil)},
		{name: "payload swapped under a valid signature", reason: ReasonSignature,
			token: parts[0] + "." + b64url([]byte(`{"exp":99999999999,"accountId":"x"}`)) + "." + parts[2]},
		{name: "empty signature", reason: ReasonSignature, token: parts[0] + "." + payload + "."},
		{name: "1 MB of dots", reason: ReasonTooLarge, token: strings.Repeat(".", 1<<20)},
		{name: "five parts (JWE shape)", reason: ReasonMalformed, token: good + ".x.y"},
		{name: "two parts", reason: ReasonMalformed, token: parts[0] + "." + payload},
		{name: "padded base64", reason: ReasonMalformed, token: good + "=="},
		{name: "non-canonical base64 signature", reason: ReasonMalformed, token: nonCanonical(good)},
		{name: "header not JSON", reason: ReasonMalformed, token: rawHeader("RS256") + "." + payload + "." + parts[2]},
		{name: "crit header", reason: ReasonMalformed,
			token: mint(t, rsaA, "", valid, map[string]any{"crit": []string{"b64"}, "b64": false})},
		{name: "payload is an array", reason: ReasonMalformed, token: signRaw(t, "RS256", rsaA.priv,
			[]byte(`{"alg":"RS256","kid":"rsa-a"}`), []byte(`[{"exp":99999999999}]`))},
		{name: "payload not JSON", reason: ReasonMalformed, token: signRaw(t, "RS256", rsaA.priv,
			[]byte(`{"alg":"RS256","kid":"rsa-a"}`), []byte(`{"exp":`))},
		{name: "empty", reason: ReasonMalformed, token: ""},
		{name: "Bearer only", reason: ReasonMalformed, token: "Bearer "},
	}
}

// nonCanonical re-spells the signature's last base64 character with
// non-zero padding bits, which a lax decoder maps to the same bytes.
func nonCanonical(tok string) string {
	last := tok[len(tok)-1]
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, last)
	return tok[:len(tok)-1] + string(alphabet[i^1])
}

func TestVerifyRejectsAttacks(t *testing.T) {
	var attackerHits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		attackerHits.Add(1)
		_, _ = w.Write(jwksJSON(t, rsaEvil))
	}))
	defer attacker.Close()

	srv := newJWKSServer(t, jwksJSON(t, defaultKeys(t)...))
	h := startVerifier(t, srv, defaultConfig())
	attacks := attackTokens(t, attacker.URL)

	var want []string
	for _, tc := range attacks {
		want = append(want, tc.reason)
		t.Run(tc.name, func(t *testing.T) {
			id, err := h.v.Verify(testkit.Context(t), tc.token)
			if err == nil {
				t.Fatalf("Verify accepted the token: %+v", id)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			if diff := cmp.Diff(tc.reason, ReasonOf(err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
			msg := err.Error()
			parts := []string{tc.secret}
			if len(tc.token) <= MaxTokenBytes*2 {
				parts = append(parts, strings.Split(tc.token, ".")...)
			}
			for _, part := range parts {
				if len(part) >= 4 && strings.Contains(msg, part) {
					t.Errorf("error message %q contains part of the token", msg)
				}
			}
			if strings.ContainsFunc(msg, func(r rune) bool { return r < 0x20 }) {
				t.Errorf("error message %q has control characters", msg)
			}
		})
	}
	if n := attackerHits.Load(); n != 0 {
		t.Errorf("jku/x5u/jwk server got %d requests, want 0", n)
	}
	h.obs.mu.Lock()
	got := h.obs.rejected
	h.obs.mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Observer.Rejected reasons (-want +got):\n%s", diff)
	}
}

func TestTooLargeIsCheap(t *testing.T) {
	// No Observer: the recording one would allocate.
	v, err := New(Config{JWKSURL: "http://127.0.0.1:1/jwks"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testkit.Context(t)
	dots := strings.Repeat(".", 1<<20)
	allocs := testing.AllocsPerRun(20, func() {
		_, err = v.Verify(ctx, dots)
	})
	if reason := ReasonOf(err); reason != ReasonTooLarge {
		t.Errorf("reason = %q, want %q", reason, ReasonTooLarge)
	}
	// One allocation: the *Error itself. Nothing proportional to the input.
	if allocs > 1 {
		t.Errorf("rejecting 1 MB of dots allocated %v times per call, want <= 1", allocs)
	}
}

func TestCheckBody(t *testing.T) {
	const acct, app = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", "@acme/app"
	full := &Identity{AccountID: acct, IrisAppID: app, HasAccountID: true, HasIrisAppID: true}
	cases := []struct {
		name       string
		id         *Identity
		app, acct  string
		wantReason string
	}{
		{"both match", full, app, acct, ""},
		{"account differs", full, app, "ffffffff-4f50-6172-8394-a5b6c7d8e9f0", ReasonClaimMismatch},
		{"app differs", full, "@evil/app", acct, ReasonClaimMismatch},
		{"account differs only in case", full, app, strings.ToUpper(acct), ReasonClaimMismatch},
		{"claims absent: anything goes", &Identity{}, "@other/app", "anything", ""},
		{"empty claim present must match", &Identity{HasAccountID: true}, app, acct, ReasonClaimMismatch},
		{"empty claim present, empty body", &Identity{HasAccountID: true}, app, "", ""},
		{"only app claim", &Identity{IrisAppID: app, HasIrisAppID: true}, app, "any", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.id.CheckBody(tc.app, tc.acct)
			if diff := cmp.Diff(tc.wantReason, ReasonOf(err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			if err != nil && (strings.Contains(err.Error(), tc.acct) || strings.Contains(err.Error(), tc.app)) {
				t.Errorf("error %q echoes the body", err)
			}
		})
	}
}
