package identity

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

func TestVerifyAccepts(t *testing.T) {
	srv := newJWKSServer(t, jwksJSON(t, defaultKeys(t)...))
	h := startVerifier(t, srv, defaultConfig())
	valid := validClaims()
	want := validIdentity()

	minimal := map[string]any{"exp": testNow.Add(time.Minute).Unix()}
	cases := []struct {
		name  string
		token string
		want  *Identity
	}{
		{"RSA RS256", mint(t, rsaA, "RS256", valid, nil), want},
		{"RSA RS384", mint(t, rsaA, "RS384", valid, nil), want},
		{"RSA PS256", mint(t, rsaA, "PS256", valid, nil), want},
		{"RSA PS512", mint(t, rsaA, "PS512", valid, nil), want},
		{"RSA key with its own alg RS512", mint(t, rsaB.withKID("rsa-b512", ""), "RS512", valid, nil), want},
		{"EC P-256 ES256", mint(t, ec256, "", valid, nil), want},
		{"EC P-384 ES384", mint(t, ec384, "", valid, nil), want},
		{"EC P-521 ES512", mint(t, ec521, "", valid, nil), want},
		{"Ed25519 EdDSA", mint(t, edKey, "", valid, nil), want},
		{"aud array containing ours", mint(t, rsaA, "", with(valid, map[string]any{"aud": []string{"other", testAudience}}), nil), want},
		{"Bearer prefix", "Bearer " + mint(t, rsaA, "", valid, nil), want},
		{"lower-case bearer and spaces", "  bearer  " + mint(t, rsaA, "", valid, nil) + " ", want},
		{"unknown headers are ignored", mint(t, rsaA, "", valid, map[string]any{"typ": "at+jwt", "cty": "x"}), want},
		{"fractional NumericDates", mint(t, rsaA, "", with(valid, map[string]any{
			"iat": json.Number("1772366340.25"), "exp": json.Number("1.7723667e9")}), nil),
			func() *Identity {
				id := validIdentity()
				id.IssuedAt = time.Unix(1772366340, 250_000_000)
				id.ExpiresAt = time.Unix(1772366700, 0)
				return id
			}()},
		{"no install claims", mint(t, rsaA, "", with(valid, map[string]any{"accountId": nil, "irisAppId": nil, "jti": nil}), nil),
			&Identity{IssuedAt: want.IssuedAt, ExpiresAt: want.ExpiresAt}},
		{"escaped strings", mint(t, rsaA, "", with(valid, map[string]any{"irisAppId": "@acme/\u00e4pp\"x"}), nil),
			func() *Identity { id := validIdentity(); id.IrisAppID = "@acme/\u00e4pp\"x"; return id }()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := h.v.Verify(testkit.Context(t), tc.token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if diff := cmp.Diff(tc.want, id); diff != "" {
				t.Errorf("identity (-want +got):\n%s", diff)
			}
		})
	}

	// Without iss/aud configured, neither is looked at.
	t.Run("iss and aud unchecked when not configured", func(t *testing.T) {
		cfg := defaultConfig()
		cfg.Issuer, cfg.Audience = "", ""
		h2 := startVerifier(t, srv, cfg)
		id, err := h2.v.Verify(testkit.Context(t), mint(t, rsaA, "", with(minimal, map[string]any{"iss": "x", "aud": 5}), nil))
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if diff := cmp.Diff(&Identity{ExpiresAt: time.Unix(testNow.Add(time.Minute).Unix(), 0)}, id); diff != "" {
			t.Errorf("identity (-want +got):\n%s", diff)
		}
	})
}

func TestVerifyNoKIDWithOneKeyJWKS(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, jwksJSON(t, ec256))
	h := startVerifier(t, srv, defaultConfig())
	tok := mint(t, ec256, "", validClaims(), map[string]any{"kid": nil})
	id, err := h.v.Verify(testkit.Context(t), tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if diff := cmp.Diff(validIdentity(), id); diff != "" {
		t.Errorf("identity (-want +got):\n%s", diff)
	}
	// The one key still has a kid: a token naming another kid is refused.
	_, err = h.v.Verify(testkit.Context(t), mint(t, ec256.withKID("other", ""), "", validClaims(), nil))
	if got := ReasonOf(err); got != ReasonUnknownKID {
		t.Errorf("reason = %q, want %q", got, ReasonUnknownKID)
	}
}

// TestLeewayEdges puts each time claim one second inside and one second
// outside its allowed window (Leeway 60s, MaxAge 10m).
func TestLeewayEdges(t *testing.T) {
	srv := newJWKSServer(t, jwksJSON(t, defaultKeys(t)...))
	h := startVerifier(t, srv, defaultConfig())
	at := func(d time.Duration) int64 { return testNow.Add(d).Unix() }
	cases := []struct {
		name   string
		change map[string]any
		reason string
	}{
		{"exp just within leeway", map[string]any{"exp": at(-59 * time.Second)}, ""},
		{"exp exactly at leeway", map[string]any{"exp": at(-60 * time.Second)}, ReasonExpired},
		{"exp just beyond leeway", map[string]any{"exp": at(-61 * time.Second)}, ReasonExpired},
		{"nbf just within leeway", map[string]any{"nbf": at(59 * time.Second)}, ""},
		{"nbf exactly at leeway", map[string]any{"nbf": at(60 * time.Second)}, ""},
		{"nbf just beyond leeway", map[string]any{"nbf": at(61 * time.Second)}, ReasonNotYetValid},
		{"iat just within leeway", map[string]any{"iat": at(59 * time.Second)}, ""},
		{"iat just beyond leeway", map[string]any{"iat": at(61 * time.Second)}, ReasonIATFuture},
		{"iat just within MaxAge", map[string]any{"iat": at(-(10*time.Minute - time.Second))}, ""},
		{"iat exactly MaxAge old", map[string]any{"iat": at(-10 * time.Minute)}, ""},
		{"iat just beyond MaxAge, within leeway", map[string]any{"iat": at(-(10*time.Minute + time.Second))}, ReasonTooOld},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.v.Verify(testkit.Context(t), mint(t, rsaA, "", with(validClaims(), tc.change), nil))
			if diff := cmp.Diff(tc.reason, ReasonOf(err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s (err %v)", diff, err)
			}
		})
	}
}

func TestNumericDate(t *testing.T) {
	cases := []struct {
		raw  string
		want time.Time
		ok   bool
	}{
		{"0", time.Unix(0, 0), true},
		{"1772366400", time.Unix(1772366400, 0), true},
		{"1772366400.5", time.Unix(1772366400, 500_000_000), true},
		{"1.7723664e9", time.Unix(1772366400, 0), true},
		{"253402300799", time.Unix(253402300799, 0), true},
		{"253402300800", time.Time{}, false},
		{"1e300", time.Time{}, false},
		{"-1", time.Time{}, false},
		{`"1772366400"`, time.Time{}, false},
		{"null", time.Time{}, false},
		{"true", time.Time{}, false},
		{"[1]", time.Time{}, false},
		{"", time.Time{}, false},
	}
	for _, tc := range cases {
		got, ok := numericDate(json.RawMessage(tc.raw))
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("numericDate(%q) = %v, %v; want %v, %v", tc.raw, got, ok, tc.want, tc.ok)
		}
	}
}
