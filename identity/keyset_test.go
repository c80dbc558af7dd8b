package identity

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

func TestParseKeySetSkipsUnusableKeys(t *testing.T) {
	testKeys(t)
	entry := func(k jwk.Key, set map[string]any) json.RawMessage {
		for name, val := range set {
			if err := k.Set(name, val); err != nil {
				t.Fatalf("Set %s: %v", name, err)
			}
		}
		b, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fromRaw := func(raw any) jwk.Key {
		k, err := jwk.FromRaw(raw)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	x25519, _ := ecdh.X25519().GenerateKey(rand.Reader)
	x25519JWK := fmt.Sprintf(`{"kty":"OKP","crv":"X25519","kid":"x25519","x":%q}`, b64url(x25519.PublicKey().Bytes()))
	privEC, _ := ecdsa.GenerateKey(ec256.priv.(*ecdsa.PrivateKey).Curve, rand.Reader)

	keys := []json.RawMessage{
		entry(fromRaw(rsaA.pub), map[string]any{"kid": "good-rsa"}),
		entry(fromRaw(ec256.pub), map[string]any{"kid": "good-ec", "use": "sig", "key_ops": []string{"verify"}}),
		entry(fromRaw(edKey.pub), map[string]any{"kid": "good-ed", "alg": "EdDSA"}),
		entry(fromRaw(rsaB.pub), map[string]any{"kid": "good-rsa"}), // duplicate kid: first wins
		entry(fromRaw([]byte("symmetric secret")), map[string]any{"kid": "oct"}),
		entry(fromRaw(rsaA.priv), map[string]any{"kid": "private-rsa"}),
		entry(fromRaw(privEC), map[string]any{"kid": "private-ec"}),
		entry(fromRaw(edKey.priv), map[string]any{"kid": "private-ed"}),
		entry(fromRaw(rsaA.pub), map[string]any{"kid": "enc", "use": "enc"}),
		entry(fromRaw(rsaA.pub), map[string]any{"kid": "ops", "key_ops": []string{"encrypt"}}),
		entry(fromRaw(&weak.PublicKey), map[string]any{"kid": "weak"}),
		json.RawMessage(x25519JWK),
		entry(fromRaw(rsaA.pub), map[string]any{"kid": "hs-alg", "alg": "HS256"}),
		entry(fromRaw(ec256.pub), map[string]any{"kid": "wrong-curve-alg", "alg": "ES384"}),
		json.RawMessage(`{"kty":"FOO","kid":"unknown-kty"}`),
		json.RawMessage(`{"kty":"EC","crv":"P-256","kid":"off-curve","x":"AQ","y":"AQ"}`),
		json.RawMessage(`"not an object"`),
	}
	body, _ := json.Marshal(map[string]any{"keys": keys})
	set, skipped, err := parseKeySet(body, testNow)
	if err != nil {
		t.Fatalf("parseKeySet: %v", err)
	}
	var got []string
	for kid := range set.byKID {
		got = append(got, kid)
	}
	if diff := cmp.Diff([]string{"good-ec", "good-ed", "good-rsa"}, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("kids (-want +got):\n%s", diff)
	}
	if skipped != len(keys)-3 {
		t.Errorf("skipped = %d, want %d", skipped, len(keys)-3)
	}
	if k := set.byKID["good-rsa"]; k.pub.(*rsa.PublicKey).N.Cmp(rsaA.pub.(*rsa.PublicKey).N) != 0 {
		t.Error("duplicate kid replaced the first key")
	}
	if set.only != nil {
		t.Error("a three-key set has a default key for kid-less tokens")
	}

	for _, bad := range []string{`<html>`, `{"keys":[]}`, `{}`, `[]`, `{"keys":[{"kty":"oct","k":"AA"}]}`} {
		if _, _, err := parseKeySet([]byte(bad), testNow); err == nil {
			t.Errorf("parseKeySet(%s) succeeded", bad)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	_, err := New(Config{JWKSURL: "ftp://x", Leeway: -1, FetchTimeout: -time.Second, MaxJWKSBytes: -5})
	if err == nil {
		t.Fatal("New accepted a bad config")
	}
	for _, want := range []string{"JWKSURL", "Leeway", "FetchTimeout", "MaxJWKSBytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	v, err := New(Config{JWKSURL: "https://iris.trackunit.com/api/marketplace/jwks"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	got := []any{v.cfg.RefreshInterval, v.cfg.UnknownKIDCooldown, v.cfg.FetchTimeout, v.cfg.MaxJWKSBytes, v.cfg.MaxAge, v.cfg.HTTPClient.Timeout}
	want := []any{15 * time.Minute, 30 * time.Second, 5 * time.Second, int64(1 << 20), 10 * time.Minute, 5 * time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}
