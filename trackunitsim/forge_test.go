package trackunitsim

import (
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

func forge(t *testing.T, s *Sim, spec ForgeSpec) string {
	t.Helper()
	tok, err := s.Forge(spec)
	if err != nil {
		t.Fatalf("Forge: %v", err)
	}
	return tok
}

// verifiesWithJWKS reports whether tok verifies against s's published keys.
func verifiesWithJWKS(t *testing.T, s *Sim, tok string) bool {
	t.Helper()
	set, err := s.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	_, err = jws.Verify([]byte(tok), jws.WithKeySet(set))
	return err == nil
}

func rsaPublic(t *testing.T, s *Sim) *rsa.PublicKey {
	t.Helper()
	pub, err := s.PublicKey("")
	if err != nil {
		t.Fatal(err)
	}
	return pub.(*rsa.PublicKey)
}

func TestForgeDefaultIsValid(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	tok := forge(t, s, ForgeSpec{})
	if !verifiesWithJWKS(t, s, tok) {
		t.Error("Forge(ForgeSpec{}) does not verify against the JWKS")
	}
	if diff := cmp.Diff(map[string]any{"alg": "RS256", "typ": "JWT", "kid": s.SigningKID()}, decodeHeader(t, tok)); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
}

func TestForgeAlgNone(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	tok := forge(t, s, ForgeSpec{Alg: "none", Claims: Claims{"accountId": "a"}})
	parts := compactParts(t, tok)
	if parts[2] != "" {
		t.Errorf("signature part = %q, want empty", parts[2])
	}
	if alg := decodeHeader(t, tok)["alg"]; alg != "none" {
		t.Errorf("alg = %v, want none", alg)
	}
	if decodeClaims(t, tok)["accountId"] != "a" {
		t.Error("claims lost")
	}
	if verifiesWithJWKS(t, s, tok) {
		t.Error("alg none verifies against the JWKS")
	}
	// Header case tricks go through Headers.
	tok = forge(t, s, ForgeSpec{Alg: "none", Headers: map[string]any{"alg": "NoNe"}})
	if alg := decodeHeader(t, tok)["alg"]; alg != "NoNe" || compactParts(t, tok)[2] != "" {
		t.Errorf("alg = %v, want NoNe and no signature", alg)
	}
}

func TestForgeHMACWithPublicKey(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	pub := rsaPublic(t, s)
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := x509.MarshalPKCS1PublicKey(pub)
	jwks, err := s.JWKSJSON()
	if err != nil {
		t.Fatal(err)
	}
	var set struct{ Keys []json.RawMessage }
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		src    HMACKeySource
		secret []byte
	}{
		{HMACPublicPEM, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})},
		{HMACPublicDER, pkix},
		{HMACPublicPKCS1PEM, pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkcs1})},
		{HMACPublicPKCS1DER, pkcs1},
		{HMACPublicJWK, set.Keys[0]},
	}
	for _, tc := range tests {
		name := string(tc.src)
		if name == "" {
			name = "pem"
		}
		t.Run(name, func(t *testing.T) {
			tok := forge(t, s, ForgeSpec{Alg: "HS256", HMACKey: tc.src})
			parts := compactParts(t, tok)
			mac := hmac.New(sha256.New, tc.secret)
			mac.Write([]byte(parts[0] + "." + parts[1]))
			if got, want := parts[2], base64.RawURLEncoding.EncodeToString(mac.Sum(nil)); got != want {
				t.Errorf("signature is not HMAC-SHA256 keyed with the %q public key bytes", tc.src)
			}
			hdr := decodeHeader(t, tok)
			if hdr["alg"] != "HS256" || hdr["kid"] != s.SigningKID() {
				t.Errorf("header = %v, want HS256 with the RSA key's kid", hdr)
			}
			if _, err := jws.Verify([]byte(tok), jws.WithKey(jwa.HS256, tc.secret)); err != nil {
				t.Errorf("jwx HMAC check: %v", err)
			}
			if verifiesWithJWKS(t, s, tok) {
				t.Error("HS256 forgery verifies against the JWKS")
			}
		})
	}
	tok := forge(t, s, ForgeSpec{Alg: "HS256", HMACSecret: []byte("chosen")})
	if _, err := jws.Verify([]byte(tok), jws.WithKey(jwa.HS256, []byte("chosen"))); err != nil {
		t.Errorf("HMACSecret not used: %v", err)
	}
}

func TestForgeJSONSerializations(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	forgedPayload := base64.RawURLEncoding.EncodeToString([]byte(`{"accountId":"victim"}`))
	tests := []struct {
		name string
		spec ForgeSpec
		// sig picks the (protected, signature, header) of the signature to
		// check from the decoded JSON.
		sig        func(m map[string]any) map[string]any
		wantFields []string
	}{
		{
			name:       "flattened",
			spec:       ForgeSpec{Serialization: Flattened, Unprotected: map[string]any{"kid": "attacker", "alg": "none"}},
			sig:        func(m map[string]any) map[string]any { return m },
			wantFields: []string{"header", "payload", "protected", "signature"},
		},
		{
			name:       "flattened forged outer payload",
			spec:       ForgeSpec{Serialization: Flattened, Outer: map[string]any{"payload2": forgedPayload}},
			sig:        func(m map[string]any) map[string]any { return m },
			wantFields: []string{"payload", "payload2", "protected", "signature"},
		},
		{
			name: "general with extra signature",
			spec: ForgeSpec{Serialization: General, Unprotected: map[string]any{"jku": "https://evil.example/jwks"},
				ExtraSignatures: []map[string]any{{"protected": "e30", "signature": ""}}},
			sig: func(m map[string]any) map[string]any {
				return m["signatures"].([]any)[0].(map[string]any)
			},
			wantFields: []string{"payload", "signatures"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := forge(t, s, tc.spec)
			var m map[string]any
			if err := json.Unmarshal([]byte(tok), &m); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			var fields []string
			for k := range m {
				fields = append(fields, k)
			}
			if diff := cmp.Diff(tc.wantFields, fields, sortStrings); diff != "" {
				t.Errorf("top-level members (-want +got):\n%s", diff)
			}
			sig := tc.sig(m)
			// The protected header and payload carry a valid signature.
			compact := sig["protected"].(string) + "." + m["payload"].(string) + "." + sig["signature"].(string)
			if !verifiesWithJWKS(t, s, compact) {
				t.Error("the signed part does not verify")
			}
			if tc.spec.Unprotected != nil {
				if diff := cmp.Diff(tc.spec.Unprotected, sig["header"]); diff != "" {
					t.Errorf("unprotected header (-want +got):\n%s", diff)
				}
			}
			if n := len(tc.spec.ExtraSignatures); n > 0 {
				if got := len(m["signatures"].([]any)); got != 1+n {
					t.Errorf("%d signatures, want %d", got, 1+n)
				}
			}
		})
	}
	tok := forge(t, s, ForgeSpec{Serialization: Flattened, Outer: map[string]any{"payload": forgedPayload}})
	var m map[string]any
	_ = json.Unmarshal([]byte(tok), &m)
	if m["payload"] != forgedPayload {
		t.Errorf("Outer did not replace the payload: %v", m["payload"])
	}
}

var sortStrings = cmpopts.SortSlices(func(a, b string) bool { return a < b })

func TestForgeHeaders(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	long := strings.Repeat("k", 10<<10)
	tests := []struct {
		name    string
		headers map[string]any
		want    map[string]any
	}{
		{"no kid", map[string]any{"kid": nil}, map[string]any{"alg": "RS256", "typ": "JWT"}},
		{"path kid", map[string]any{"kid": "../../../../dev/null"}, nil},
		{"sql kid", map[string]any{"kid": "' OR '1'='1' --"}, nil},
		{"10 KB kid", map[string]any{"kid": long}, nil},
		{"control chars kid", map[string]any{"kid": "a\x00b\r\nc\x1b[31m"}, nil},
		{"number kid", map[string]any{"kid": 42}, nil},
		{"jku x5u", map[string]any{"jku": "https://evil.example/jwks", "x5u": "https://evil.example/cert.pem"}, nil},
		{"crit", map[string]any{"crit": []any{"exp"}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := forge(t, s, ForgeSpec{Headers: tc.headers})
			want := tc.want
			if want == nil {
				want = map[string]any{"alg": "RS256", "typ": "JWT", "kid": s.SigningKID()}
				for k, v := range tc.headers {
					if n, ok := v.(int); ok {
						v = num(int64(n))
					}
					want[k] = v
				}
			}
			if diff := cmp.Diff(want, decodeHeader(t, tok)); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
		})
	}
}

func TestForgeEmbeddedKeys(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	t.Run("jwk with fresh key", func(t *testing.T) {
		tok := forge(t, s, ForgeSpec{FreshKey: true, EmbedJWK: true})
		hdr := decodeHeader(t, tok)
		if hdr["kid"] != s.SigningKID() {
			t.Errorf("kid = %v, want the published %s", hdr["kid"], s.SigningKID())
		}
		raw, _ := json.Marshal(hdr["jwk"])
		embedded, err := jwk.ParseKey(raw)
		if err != nil {
			t.Fatalf("jwk header: %v", err)
		}
		if _, err := jws.Verify([]byte(tok), jws.WithKey(jwa.RS256, embedded)); err != nil {
			t.Errorf("does not verify with the embedded key: %v", err)
		}
		if verifiesWithJWKS(t, s, tok) {
			t.Error("fresh-key token verifies against the JWKS")
		}
	})
	t.Run("x5c", func(t *testing.T) {
		tok := forge(t, s, ForgeSpec{EmbedX5C: true})
		chain, _ := decodeHeader(t, tok)["x5c"].([]any)
		if len(chain) != 1 {
			t.Fatalf("x5c = %v, want one certificate", chain)
		}
		der, err := base64.StdEncoding.DecodeString(chain[0].(string))
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if !cert.PublicKey.(*rsa.PublicKey).Equal(rsaPublic(t, s)) {
			t.Error("x5c certificate is not for the signing key")
		}
	})
	t.Run("fresh key without jwk", func(t *testing.T) {
		tok := forge(t, s, ForgeSpec{FreshKey: true})
		if decodeHeader(t, tok)["kid"] != s.SigningKID() || verifiesWithJWKS(t, s, tok) {
			t.Error("want the current kid and a signature the JWKS does not verify")
		}
	})
}

func TestForgeClaims(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	at := t0.Add(-2 * time.Hour)
	tests := []struct {
		name string
		spec ForgeSpec
		want map[string]any // jti removed
	}{
		{"missing exp", ForgeSpec{Claims: Claims{"exp": nil}}, map[string]any{"iat": num(t0.Unix())}},
		{"string exp", ForgeSpec{Claims: Claims{"exp": "9999999999"}}, map[string]any{"iat": num(t0.Unix()), "exp": "9999999999"}},
		{"times", ForgeSpec{Claims: Claims{"exp": at, "nbf": at.Add(time.Hour), "iat": at}},
			map[string]any{"iat": num(at.Unix()), "nbf": num(at.Add(time.Hour).Unix()), "exp": num(at.Unix())}},
		{"no defaults", ForgeSpec{NoDefaultClaims: true, Claims: Claims{"accountId": "x"}}, map[string]any{"accountId": "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := forge(t, s, tc.spec)
			got := decodeClaims(t, tok)
			delete(got, "jti")
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			if !verifiesWithJWKS(t, s, tok) {
				t.Error("claim forgeries must still carry a valid signature")
			}
		})
	}
}

func TestForgeAlgMismatch(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	pub := rsaPublic(t, s)
	tests := []struct {
		name       string
		spec       ForgeSpec
		headerAlg  string
		verifyWith jwa.SignatureAlgorithm
	}{
		{"RS512 header, signed RS512 by the RS256 key", ForgeSpec{Alg: "RS512"}, "RS512", jwa.RS512},
		{"ES256 header on the RSA key", ForgeSpec{Alg: "ES256"}, "ES256", jwa.RS256},
		{"PS256 signature under RS256 header", ForgeSpec{Alg: "RS256", SignAlg: "PS256"}, "RS256", jwa.PS256},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := forge(t, s, tc.spec)
			if alg := decodeHeader(t, tok)["alg"]; alg != tc.headerAlg {
				t.Errorf("header alg = %v, want %s", alg, tc.headerAlg)
			}
			parts := compactParts(t, tok)
			// The raw verifier checks the signature bytes whatever the header says.
			sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
			v, err := jws.NewVerifier(tc.verifyWith)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Verify([]byte(parts[0]+"."+parts[1]), sig, pub); err != nil {
				t.Errorf("signature is not %s by the RSA key: %v", tc.verifyWith, err)
			}
		})
	}
}

func TestForgeRawAndTamper(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	tok := forge(t, s, ForgeSpec{TamperSignature: true})
	if verifiesWithJWKS(t, s, tok) {
		t.Error("tampered signature verifies")
	}
	rawHeader := []byte(`{"alg":"RS256","alg":"none"}`)
	tok = forge(t, s, ForgeSpec{RawHeader: rawHeader, RawPayload: []byte("not json"), RawSignature: []byte{}})
	parts := compactParts(t, tok)
	got0, _ := base64.RawURLEncoding.DecodeString(parts[0])
	got1, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if string(got0) != string(rawHeader) || string(got1) != "not json" || parts[2] != "" {
		t.Errorf("raw parts = %q %q %q", got0, got1, parts[2])
	}

	old := s.SigningKID()
	if _, err := s.Rotate("ES256"); err != nil {
		t.Fatal(err)
	}
	tok = forge(t, s, ForgeSpec{SignKID: old})
	if decodeHeader(t, tok)["kid"] != old || !verifiesWithJWKS(t, s, tok) {
		t.Error("SignKID: want a valid token from the old key")
	}
	if _, err := s.Forge(ForgeSpec{SignKID: "missing"}); err == nil {
		t.Error("Forge with an unknown SignKID succeeded")
	}
	if _, err := s.Forge(ForgeSpec{Alg: "HS256", HMACKey: HMACPublicPKCS1PEM}); err == nil {
		t.Error("PKCS #1 HMAC secret from an EC key succeeded")
	}
}
