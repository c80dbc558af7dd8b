package trackunitsim

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// decodePart decodes one base64url JSON part of a compact JWS. Numbers stay
// json.Number so that NumericDates compare exactly.
func decodePart(t *testing.T, part string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatalf("decode part %q: %v", part, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("part %s is not a JSON object: %v", raw, err)
	}
	return m
}

func compactParts(t *testing.T, tok string) []string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3: %q", len(parts), tok)
	}
	return parts
}

func decodeHeader(t *testing.T, tok string) map[string]any {
	t.Helper()
	return decodePart(t, compactParts(t, tok)[0])
}

func decodeClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	return decodePart(t, compactParts(t, tok)[1])
}

// num is how decodePart shows a JSON integer.
func num(n int64) json.Number { return json.Number(strconv.FormatInt(n, 10)) }

func TestSignIdentityVerifiesAgainstServedJWKS(t *testing.T) {
	clock := newClock()
	s, srv := newTestSim(t, Options{Now: clock.Now, Issuer: "https://iris.trackunit.com", Audience: "@org/app"})
	tok, err := s.SignIdentity(Claims{"accountId": "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3", "irisAppId": "@org/app"})
	if err != nil {
		t.Fatal(err)
	}
	set := fetchJWKS(t, srv.URL+"/api/marketplace/jwks")
	parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithClock(jwt.ClockFunc(clock.Now)),
		jwt.WithIssuer("https://iris.trackunit.com"), jwt.WithAudience("@org/app"))
	if err != nil {
		t.Fatalf("jwx rejects the identity JWT: %v", err)
	}
	if got := parsed.Expiration(); !got.Equal(t0.Add(IdentityTTL)) {
		t.Errorf("exp = %v, want %v", got, t0.Add(IdentityTTL))
	}

	hdr := decodeHeader(t, tok)
	if diff := cmp.Diff(map[string]any{"alg": "RS256", "kid": s.SigningKID(), "typ": "JWT"}, hdr); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	claims := decodeClaims(t, tok)
	jti, _ := claims["jti"].(string)
	delete(claims, "jti")
	want := map[string]any{
		"iat": num(t0.Unix()), "exp": num(t0.Add(5 * time.Minute).Unix()),
		"iss": "https://iris.trackunit.com", "aud": "@org/app",
		"accountId": "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3", "irisAppId": "@org/app",
	}
	if diff := cmp.Diff(want, claims); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	tok2, _ := s.SignIdentity(nil)
	if jti2 := decodeClaims(t, tok2)["jti"]; len(jti) < 16 || jti2 == jti {
		t.Errorf("jti %q then %v: want random and distinct", jti, jti2)
	}

	// An hour later the same token is expired for a verifier on that clock.
	clock.Advance(time.Hour)
	if _, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithClock(jwt.ClockFunc(clock.Now))); err == nil {
		t.Error("jwx accepts the identity JWT an hour after exp")
	}
}

func TestSignIdentityExtraClaims(t *testing.T) {
	s, _ := newTestSim(t, Options{Issuer: "iss-default"})
	tests := []struct {
		name  string
		extra Claims
		want  map[string]any
	}{
		{"nil deletes", Claims{"iss": nil, "exp": nil}, map[string]any{"iat": num(t0.Unix())}},
		{"override with time", Claims{"exp": t0.Add(-time.Minute), "iss": "other"},
			map[string]any{"iat": num(t0.Unix()), "exp": num(t0.Add(-time.Minute).Unix()), "iss": "other"}},
		{"string exp stays a string", Claims{"exp": "9999999999"},
			map[string]any{"iat": num(t0.Unix()), "exp": "9999999999", "iss": "iss-default"}},
		{"aud list", Claims{"aud": []string{"a", "b"}},
			map[string]any{"iat": num(t0.Unix()), "exp": num(t0.Add(IdentityTTL).Unix()), "iss": "iss-default", "aud": []any{"a", "b"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := s.SignIdentity(tc.extra)
			if err != nil {
				t.Fatal(err)
			}
			got := decodeClaims(t, tok)
			delete(got, "jti")
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
}
