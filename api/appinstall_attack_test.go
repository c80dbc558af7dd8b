package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

const testApp = "@irisx/test-app"

func installBody(t testing.TB, fields map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func installedFields(account string) map[string]any {
	return map[string]any{
		"type": "INSTALLED", "irisAppId": testApp, "accountId": account,
		"clientId": "0oa" + strings.Repeat("c", 17), "clientSecret": "s3cret-" + uuid.NewString(),
	}
}

// Every attack on the identity JWT answers 401 and stores nothing.
func TestInstallIdentityAttacks(t *testing.T) {
	var fetched atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer attacker.Close()

	h := newHarness(t, harnessOptions{config: func(c *config.Config) {
		c.IdentityIssuer = "https://iris.trackunit.com"
		c.IdentityAudience = "irisx-broker"
	}, simOptions: trackunitsim.Options{Issuer: "https://iris.trackunit.com", Audience: "irisx-broker"}})
	account := uuid.NewString()
	now := time.Now()
	forge := func(spec trackunitsim.ForgeSpec) func() string {
		return func() string {
			tok, err := h.sim.Forge(spec)
			if err != nil {
				t.Fatalf("forge: %v", err)
			}
			return tok
		}
	}
	ctl := string([]byte{0x00, 0x1b, '[', '2', 'J', '\n', '\r'})
	cases := []struct {
		name     string
		identity func() string
		body     map[string]any
	}{
		{"no header", func() string { return "" }, nil},
		{"alg none", forge(trackunitsim.ForgeSpec{Alg: "none"}), nil},
		{"HS256 with the RSA public key PEM", forge(trackunitsim.ForgeSpec{Alg: "HS256"}), nil},
		{"HS256 with the RSA public key DER", forge(trackunitsim.ForgeSpec{Alg: "HS256", HMACKey: trackunitsim.HMACPublicDER}), nil},
		{"flattened JSON with forged outer claims", forge(trackunitsim.ForgeSpec{
			Serialization: trackunitsim.Flattened,
			Unprotected:   map[string]any{"kid": "forged"},
			Outer:         map[string]any{"payload": "eyJhY2NvdW50SWQiOiJ4In0"},
		}), nil},
		{"general JSON serialization", forge(trackunitsim.ForgeSpec{Serialization: trackunitsim.General}), nil},
		{"jku header", forge(trackunitsim.ForgeSpec{Headers: map[string]any{"jku": attacker.URL + "/jwks"}, FreshKey: true}), nil},
		{"x5u header", forge(trackunitsim.ForgeSpec{Headers: map[string]any{"x5u": attacker.URL + "/cert"}, FreshKey: true}), nil},
		{"embedded jwk", forge(trackunitsim.ForgeSpec{EmbedJWK: true, FreshKey: true}), nil},
		{"embedded x5c", forge(trackunitsim.ForgeSpec{EmbedX5C: true, FreshKey: true}), nil},
		{"kid path", forge(trackunitsim.ForgeSpec{Headers: map[string]any{"kid": "../../../../etc/passwd"}}), nil},
		{"kid SQL", forge(trackunitsim.ForgeSpec{Headers: map[string]any{"kid": "' OR 1=1; DROP TABLE installs; --"}}), nil},
		{"kid 10 KB", forge(trackunitsim.ForgeSpec{Headers: map[string]any{"kid": strings.Repeat("k", 10<<10)}}), nil},
		{"kid control characters", forge(trackunitsim.ForgeSpec{Headers: map[string]any{"kid": ctl}}), nil},
		{"exp missing", forge(trackunitsim.ForgeSpec{Claims: trackunitsim.Claims{"exp": nil}}), nil},
		{"exp a string", forge(trackunitsim.ForgeSpec{Claims: trackunitsim.Claims{"exp": "9999999999"}}), nil},
		{"exp past", forge(trackunitsim.ForgeSpec{Claims: trackunitsim.Claims{"exp": now.Add(-2 * time.Minute), "iat": now.Add(-5 * time.Minute)}}), nil},
		{"nbf future", forge(trackunitsim.ForgeSpec{Claims: trackunitsim.Claims{"nbf": now.Add(5 * time.Minute)}}), nil},
		{"iat future", forge(trackunitsim.ForgeSpec{Claims: trackunitsim.Claims{"iat": now.Add(5 * time.Minute)}}), nil},
		{"iat older than max age (within leeway)", forge(trackunitsim.ForgeSpec{Claims: trackunitsim.Claims{"iat": now.Add(-10*time.Minute - 30*time.Second), "exp": now.Add(time.Hour)}}), nil},
		{"wrong iss", forge(trackunitsim.ForgeSpec{Claims: trackunitsim.Claims{"iss": "https://evil.example"}}), nil},
		{"wrong aud", forge(trackunitsim.ForgeSpec{Claims: trackunitsim.Claims{"aud": []string{"someone-else"}}}), nil},
		{"ES256 header on an RSA key", forge(trackunitsim.ForgeSpec{Alg: "ES256"}), nil},
		{"signed by a key not in the JWKS", forge(trackunitsim.ForgeSpec{FreshKey: true}), nil},
		{"tampered signature", forge(trackunitsim.ForgeSpec{TamperSignature: true}), nil},
		{"1 MB of dots", func() string { return strings.Repeat(".", 1<<20) }, nil},
		{"garbage", func() string { return "not-a-jwt" }, nil},
		{"accountId claim disagrees", forge(trackunitsim.ForgeSpec{Claims: trackunitsim.Claims{"accountId": uuid.NewString()}}), nil},
		{"irisAppId claim disagrees", forge(trackunitsim.ForgeSpec{Claims: trackunitsim.Claims{"irisAppId": "@evil/app"}}), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if body == nil {
				body = installedFields(account)
			}
			status, resp := h.post(tc.identity(), installBody(t, body))
			if status != http.StatusUnauthorized {
				t.Fatalf("status = %d (%s), want 401", status, resp)
			}
			var e struct{ Error, Message string }
			if err := json.Unmarshal([]byte(resp), &e); err != nil || e.Error != "invalid_identity" {
				t.Errorf("body = %s, want error invalid_identity", resp)
			}
			if len(resp) > 512 {
				t.Errorf("error body is %d bytes; it must not echo the token", len(resp))
			}
			h.assertNothingStored()
		})
	}
	if n := fetched.Load(); n != 0 {
		t.Errorf("the attacker's server got %d requests; jku/x5u/jwk must never be followed", n)
	}

	// The same harness accepts a correctly signed callback, so the refusals
	// above are the attacks' doing.
	tok, err := h.sim.SignIdentity(trackunitsim.Claims{"accountId": account, "irisAppId": testApp})
	if err != nil {
		t.Fatal(err)
	}
	if status, resp := h.post("Bearer "+tok, installBody(t, installedFields(account))); status != http.StatusOK {
		t.Fatalf("valid callback: status %d (%s)", status, resp)
	}
}

// Passing identities: leeway edges, aud arrays, EC keys, rotated keys.
func TestInstallIdentityAccepted(t *testing.T) {
	var ecKID string
	h := newHarness(t, harnessOptions{
		config: func(c *config.Config) { c.IdentityAudience = "irisx-broker" },
		prepare: func(sim *trackunitsim.Sim) {
			var err error
			if ecKID, err = sim.AddKey("ES256"); err != nil {
				t.Fatal(err)
			}
		},
	})
	now := time.Now()
	cases := []struct {
		name   string
		kid    string
		claims trackunitsim.Claims
	}{
		{"aud array containing ours", "", trackunitsim.Claims{"aud": []string{"other", "irisx-broker"}}},
		{"aud string", "", trackunitsim.Claims{"aud": "irisx-broker"}},
		{"exp just inside leeway", "", trackunitsim.Claims{"aud": "irisx-broker", "exp": now.Add(-50 * time.Second), "iat": now.Add(-2 * time.Minute)}},
		{"nbf just inside leeway", "", trackunitsim.Claims{"aud": "irisx-broker", "nbf": now.Add(50 * time.Second)}},
		{"iat just inside leeway", "", trackunitsim.Claims{"aud": "irisx-broker", "iat": now.Add(50 * time.Second)}},
		{"EC key", ecKID, trackunitsim.Claims{"aud": "irisx-broker"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			account := uuid.NewString()
			tok, err := h.sim.SignIdentityWith(tc.kid, tc.claims)
			if err != nil {
				t.Fatal(err)
			}
			if status, resp := h.post(tok, installBody(t, installedFields(account))); status != http.StatusOK {
				t.Fatalf("status = %d (%s), want 200", status, resp)
			}
		})
	}

	// A key rotated into the JWKS after start is found by refetching.
	if _, err := h.sim.Rotate("RS256"); err != nil {
		t.Fatal(err)
	}
	tok, err := h.sim.SignIdentity(trackunitsim.Claims{"aud": "irisx-broker"})
	if err != nil {
		t.Fatal(err)
	}
	if status, resp := h.post(tok, installBody(t, installedFields(uuid.NewString()))); status != http.StatusOK {
		t.Fatalf("rotated key: status = %d (%s), want 200", status, resp)
	}
}
