package identity

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// Planted claim values: none may ever appear in a profile or its log line.
const (
	plantedJTI     = "PLANTED-jti-7f3a"
	plantedAccount = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
	plantedApp     = "@planted/app-9c1d"
	plantedCustom  = "PLANTED-custom-55e2"
	plantedNested  = "PLANTED-nested-0a0b"
)

// plantedClaims are validClaims with distinctive values in every claim the
// profile must not show.
func plantedClaims() map[string]any {
	return with(validClaims(), map[string]any{
		"jti": plantedJTI, "accountId": plantedAccount, "irisAppId": plantedApp,
		"custom": plantedCustom, "nested": map[string]any{"deep": plantedNested},
	})
}

// profileLine renders p as the api layer logs it, as JSON.
func profileLine(t *testing.T, p Profile) string {
	t.Helper()
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).LogAttrs(t.Context(), slog.LevelInfo, "identity token", p.LogAttrs()...)
	return buf.String()
}

// assertNoSecrets fails when line holds the token, any of its parts, or a
// planted claim value.
func assertNoSecrets(t *testing.T, line, token string) {
	t.Helper()
	forbidden := []string{plantedJTI, plantedAccount, plantedApp, plantedCustom, plantedNested}
	if token != "" {
		forbidden = append(forbidden, token)
		for _, part := range strings.Split(token, ".") {
			if len(part) >= 8 {
				forbidden = append(forbidden, part)
			}
		}
	}
	for _, f := range forbidden {
		if strings.Contains(line, f) {
			t.Errorf("profile line holds %.40q:\n%s", f, line)
		}
	}
}

func TestProfileForEveryVerdict(t *testing.T) {
	srv := newJWKSServer(t, jwksJSON(t, defaultKeys(t)...))
	h := startVerifier(t, srv, defaultConfig())
	at := func(d time.Duration) int64 { return testNow.Add(d).Unix() }
	planted := plantedClaims()
	claimNames := []string{"accountId", "aud", "custom", "exp", "iat", "irisAppId", "iss", "jti", "nested"}
	good := mint(t, rsaA, "", planted, nil)
	parts := strings.Split(good, ".")

	cases := []struct {
		name   string
		token  string
		rule   string
		claims []string // nil: the planted claim names
	}{
		{"accepted", good, "", nil},
		{"unknown kid", mint(t, rsaEvil, "", planted, nil), ReasonUnknownKID, nil},
		{"kid missing", mint(t, rsaA, "", planted, map[string]any{"kid": nil}), ReasonKIDMissing, nil},
		{"alg not allowed", mint(t, rsaA, "", planted, map[string]any{"alg": "HS256"}), ReasonAlg, nil},
		{"signature", parts[0] + "." + parts[1] + "." + b64url([]byte(strings.Repeat("x", 256))), ReasonSignature, nil},
		{"exp missing", mint(t, rsaA, "", with(planted, map[string]any{"exp": nil}), nil), ReasonExpMissing, without(claimNames, "exp")},
		{"claim type", mint(t, rsaA, "", with(planted, map[string]any{"exp": "soon"}), nil), ReasonClaimType, nil},
		{"expired", mint(t, rsaA, "", with(planted, map[string]any{"exp": at(-time.Hour)}), nil), ReasonExpired, nil},
		{"not yet valid", mint(t, rsaA, "", with(planted, map[string]any{"nbf": at(time.Hour)}), nil), ReasonNotYetValid,
			append(append([]string{}, claimNames[:6]...), "iss", "jti", "nbf", "nested")},
		{"iat future", mint(t, rsaA, "", with(planted, map[string]any{"iat": at(time.Hour)}), nil), ReasonIATFuture, nil},
		{"too old", mint(t, rsaA, "", with(planted, map[string]any{"iat": at(-time.Hour)}), nil), ReasonTooOld, nil},
		{"issuer", mint(t, rsaA, "", with(planted, map[string]any{"iss": "https://wrong.example"}), nil), ReasonIssuer, nil},
		{"audience", mint(t, rsaA, "", with(planted, map[string]any{"aud": []string{"a", "b"}}), nil), ReasonAudience, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, p, err := h.v.Check(testkit.Context(t), tc.token)
			if got := ReasonOf(err); got != tc.rule {
				t.Fatalf("reason = %q, want %q", got, tc.rule)
			}
			wantVerdict := VerdictRefused
			if tc.rule == "" {
				wantVerdict = VerdictAccepted
			}
			want := tc.claims
			if want == nil {
				want = claimNames
			}
			if p.Verdict != wantVerdict || p.Rule != tc.rule || !p.Decoded {
				t.Errorf("verdict %q rule %q decoded %v, want %q %q true", p.Verdict, p.Rule, p.Decoded, wantVerdict, tc.rule)
			}
			if diff := cmp.Diff(want, p.Claims); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			if p.Typ != "JWT" || p.Alg == "" {
				t.Errorf("alg %q typ %q", p.Alg, p.Typ)
			}
			line := profileLine(t, p)
			for _, key := range []string{`"verdict":`, `"alg":`, `"kid":`, `"typ":"JWT"`, `"iss":`, `"aud":`, `"claims":[`, `"claim_count":`} {
				if !strings.Contains(line, key) {
					t.Errorf("line lacks %s:\n%s", key, line)
				}
			}
			if tc.rule != "" && !strings.Contains(line, `"rule":"`+tc.rule+`"`) {
				t.Errorf("line lacks the rule:\n%s", line)
			}
			assertNoSecrets(t, line, tc.token)
		})
	}

	// The accepted profile in detail: iss and aud are shown, times are
	// relative to iat.
	_, p, _ := h.v.Check(testkit.Context(t), good)
	if p.Iss != testIssuer || !cmp.Equal(p.Aud, []string{testAudience}) || p.Kid != rsaA.kid || p.Alg != "RS256" {
		t.Errorf("accepted profile = %+v", p)
	}
	if !p.HasAge || p.Age != time.Minute || !p.HasLifetime || p.Lifetime != 6*time.Minute {
		t.Errorf("age %v (%v), lifetime %v (%v), want 1m and 6m", p.Age, p.HasAge, p.Lifetime, p.HasLifetime)
	}
	if want := "alg=RS256 typ=JWT iss=" + testIssuer + " aud=[" + testAudience + "] claims [" + strings.Join(claimNames, " ") + "]"; p.Shape() != want {
		t.Errorf("shape = %q, want %q", p.Shape(), want)
	}
	// claim_mismatch is CheckBody's, applied by the caller.
	id, p, _ := h.v.Check(testkit.Context(t), good)
	if err := id.CheckBody("@other/app", plantedAccount); ReasonOf(err) != ReasonClaimMismatch {
		t.Fatalf("CheckBody: %v", err)
	}
	m := p.Refused(ReasonClaimMismatch)
	if m.Verdict != VerdictRefused || m.Rule != ReasonClaimMismatch || !cmp.Equal(m.Claims, claimNames) {
		t.Errorf("mismatch profile = %+v", m)
	}
	assertNoSecrets(t, profileLine(t, m), good)
}

func without(s []string, drop string) []string {
	var out []string
	for _, x := range s {
		if x != drop {
			out = append(out, x)
		}
	}
	return out
}

// Tokens that do not decode, and a verifier without keys, still get a
// profile: verdict and rule, nothing else.
func TestProfileOfUndecodableTokens(t *testing.T) {
	v, err := New(Config{JWKSURL: "http://127.0.0.1:1/jwks", Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("A", MaxTokenBytes+1)
	good := mint(t, rsaA, "", plantedClaims(), nil)
	for _, tc := range []struct{ token, rule string }{
		{big, ReasonTooLarge},
		{"", ReasonMalformed},
		{"not.a.token!", ReasonMalformed},
		{`{"payload":"x"}`, ReasonSerialization},
		{good, ReasonNoKeys},
	} {
		_, p, err := v.Check(testkit.Context(t), tc.token)
		if ReasonOf(err) != tc.rule || p.Rule != tc.rule || p.Verdict != VerdictRefused {
			t.Errorf("%.20q: profile %+v, err %v; want rule %s", tc.token, p, err, tc.rule)
		}
		line := profileLine(t, p)
		if len(line) > 4096 {
			t.Errorf("line of %d bytes", len(line))
		}
		assertNoSecrets(t, line, tc.token)
	}
	// The no_keys token decoded: its shape is there for the operator.
	_, p, _ := v.Check(testkit.Context(t), good)
	if !p.Decoded || p.Iss != testIssuer {
		t.Errorf("no_keys profile = %+v", p)
	}
}

// Hostile tokens give a capped, escaped profile: a 10 KB iss (in a token
// short enough to be looked at, and one too long), control characters in
// claim names, and 1,000 claims.
func TestProfileOfHostileTokens(t *testing.T) {
	srv := newJWKSServer(t, jwksJSON(t, defaultKeys(t)...))
	h := startVerifier(t, srv, defaultConfig())
	ctrl := map[string]any{}
	for k, v := range plantedClaims() {
		ctrl[k] = v
	}
	ctrl["evil\x1b[31mred\x00\n\u2028name\\"] = "PLANTED-custom-55e2"
	thousand := map[string]any{"exp": testNow.Add(time.Minute).Unix()}
	for i := range 1000 {
		thousand[fmt.Sprintf("c%04d", i)] = i
	}
	cases := []struct {
		name   string
		token  string
		header map[string]any
		check  func(t *testing.T, p Profile)
	}{
		{"5 KB iss", mint(t, rsaA, "", with(plantedClaims(), map[string]any{"iss": strings.Repeat("i", 5000)}), nil), nil,
			func(t *testing.T, p Profile) {
				if p.Rule != ReasonIssuer || len(p.Iss) > MaxProfileValue+len(truncMark) || !strings.HasSuffix(p.Iss, truncMark) {
					t.Errorf("iss of %d bytes, rule %q", len(p.Iss), p.Rule)
				}
			}},
		{"10 KB iss", mint(t, rsaA, "", with(plantedClaims(), map[string]any{"iss": strings.Repeat("i", 10000)}), nil), nil,
			func(t *testing.T, p Profile) {
				if p.Rule != ReasonTooLarge || p.Iss != "" || p.Decoded {
					t.Errorf("profile %+v, want too_large undecoded", p)
				}
			}},
		{"control characters", mint(t, rsaA, "", ctrl, map[string]any{"kid": "k\x07\x1b]0;title\x07", "typ": "J\rWT"}), nil,
			func(t *testing.T, p Profile) {
				want := `evil\u001b[31mred\u0000\u000a\u2028name\\`
				found := false
				for _, c := range p.Claims {
					found = found || c == want
				}
				if !found {
					t.Errorf("claims %q lack the escaped %q", p.Claims, want)
				}
				if p.Kid != `k\u0007\u001b]0;title\u0007` || p.Typ != `J\u000dWT` {
					t.Errorf("kid %q typ %q", p.Kid, p.Typ)
				}
			}},
		{"1,000 claims", mint(t, rsaA, "", thousand, nil), nil,
			func(t *testing.T, p Profile) {
				// 1,000 claims do not fit in 8 KiB: refused unread.
				if p.Rule != ReasonTooLarge || p.Decoded || len(p.Claims) != 0 {
					t.Errorf("profile %+v, want too_large undecoded", p)
				}
			}},
		{"many and long aud", mint(t, rsaA, "", with(plantedClaims(), map[string]any{"aud": []any{
			strings.Repeat("a", 500), 7, "b", "c", "d", "e", "f", "g"}}), nil), nil,
			func(t *testing.T, p Profile) {
				if len(p.Aud) != MaxProfileAud+1 || p.Aud[1] != "<number>" || p.Aud[MaxProfileAud] != "…3 more" || len(p.Aud[0]) > MaxProfileValue+len(truncMark) {
					t.Errorf("aud %q", p.Aud)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, p, err := h.v.Check(testkit.Context(t), tc.token)
			if err == nil {
				t.Fatal("hostile token accepted")
			}
			tc.check(t, p)
			for _, s := range append([]string{p.Alg, p.Kid, p.Typ, p.Iss}, append(p.Aud, p.Claims...)...) {
				if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\u2028' }) {
					t.Errorf("profile string %q has a control character", s)
				}
			}
			line := profileLine(t, p)
			if len(line) > 6<<10 {
				t.Errorf("line of %d bytes, want <= 6 KiB", len(line))
			}
			if !json.Valid([]byte(line)) {
				t.Errorf("line is not JSON: %s", line)
			}
			assertNoSecrets(t, line, tc.token)
		})
	}
}

// Past the 8 KiB limit nothing is decoded, but the profile's own caps hold
// for any payload: 1,000 claims and a 10 KB iss, built directly.
func TestBuildProfileCaps(t *testing.T) {
	claims := map[string]any{"iss": strings.Repeat("i", 10000), "iat": testNow.Unix(), "exp": testNow.Add(time.Hour).Unix()}
	for i := range 1000 {
		claims[fmt.Sprintf("c%04d\x01", i)] = i
	}
	payload, _ := json.Marshal(claims)
	p := buildProfile(&tokenParts{header: []byte(`{"alg":"RS256"}`), payload: payload}, testNow, reject(ReasonSignature, ""))
	if p.ClaimCount != 1003 || len(p.Claims) != MaxProfileNames || p.Claims[0] != `c0000\u0001` {
		t.Errorf("claim_count %d, %d names kept, first %q", p.ClaimCount, len(p.Claims), p.Claims[0])
	}
	if len(p.Iss) != MaxProfileValue+len(truncMark) {
		t.Errorf("iss of %d bytes", len(p.Iss))
	}
	if !strings.Contains(p.Shape(), "… 963 more]") {
		t.Errorf("shape %q does not say how many were cut", p.Shape())
	}
	if line := profileLine(t, p); len(line) > 4<<10 {
		t.Errorf("line of %d bytes, want <= 4 KiB", len(line))
	}
}

func TestSanitize(t *testing.T) {
	cases := []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 10, "plain"},
		{"ünïcode ok", 20, "ünïcode ok"},
		{"a\x00b", 10, `a\u0000b`},
		{"bad\xffutf8", 20, `bad\xffutf8`},
		{`back\slash`, 20, `back\\slash`},
		{"\U000E0001tag", 20, `\U000e0001tag`},
		{"abcdefghij", 5, "abcde…"},
		{"ab\x1bcd", 4, "ab…"}, // an escape is never cut in half
	}
	for _, tc := range cases {
		if got := Sanitize(tc.in, tc.max); got != tc.want {
			t.Errorf("Sanitize(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}
