package trackunitsim

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// servedKey is one published key as a verifier sees it.
type servedKey struct {
	KID, Alg, Use, Kty string
}

func servedKeys(t *testing.T, set jwk.Set) []servedKey {
	t.Helper()
	var out []servedKey
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		alg := ""
		if a := k.Algorithm(); a != nil {
			alg = a.String()
		}
		out = append(out, servedKey{KID: k.KeyID(), Alg: alg, Use: k.KeyUsage(), Kty: k.KeyType().String()})
	}
	return out
}

func TestJWKSServedAndRotated(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	first := s.SigningKID()
	for _, path := range []string{"/jwks", "/api/marketplace/jwks"} {
		got := servedKeys(t, fetchJWKS(t, srv.URL+path))
		want := []servedKey{{KID: first, Alg: "RS256", Use: "sig", Kty: "RSA"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", path, diff)
		}
	}

	second, err := s.Rotate("ES256")
	if err != nil {
		t.Fatal(err)
	}
	if s.SigningKID() != second || second == first {
		t.Fatalf("after Rotate signing kid = %q, want new %q (old %q)", s.SigningKID(), second, first)
	}
	got := servedKeys(t, fetchJWKS(t, srv.URL+"/api/marketplace/jwks"))
	want := []servedKey{
		{KID: first, Alg: "RS256", Use: "sig", Kty: "RSA"},
		{KID: second, Alg: "ES256", Use: "sig", Kty: "EC"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after rotate (-want +got):\n%s", diff)
	}
	if n := s.Calls(EndpointJWKS); n != 3 {
		t.Errorf("Calls(jwks) = %d, want 3", n)
	}

	s.RemoveKey(second)
	if s.SigningKID() != first {
		t.Errorf("removing the signing key: signing kid = %q, want the remaining %q", s.SigningKID(), first)
	}
	s.RemoveKey(first)
	if _, err := s.SignIdentity(nil); !errors.Is(err, ErrNoSigningKey) {
		t.Errorf("SignIdentity without keys: err = %v, want ErrNoSigningKey", err)
	}
	raw, err := s.JWKSJSON()
	if err != nil || string(raw) != `{"keys":[]}` {
		t.Errorf("empty JWKS = %s, %v", raw, err)
	}
	kid, err := s.AddKey("EdDSA")
	if err != nil || s.SigningKID() != kid {
		t.Errorf("AddKey with no signing key: signing kid = %q, want %q (err %v)", s.SigningKID(), kid, err)
	}
}

func TestAddKeyKindsSignAndVerify(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	tests := []struct {
		kind, kty string
	}{
		{"PS256", "RSA"},
		{"ES256", "EC"},
		{"ES384", "EC"},
		{"ES512", "EC"},
		{"EdDSA", "OKP"},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			signing := s.SigningKID()
			kid, err := s.AddKey(tc.kind)
			if err != nil {
				t.Fatal(err)
			}
			if s.SigningKID() != signing {
				t.Errorf("AddKey changed the signing key")
			}
			tok, err := s.SignIdentityWith(kid, Claims{"accountId": "a"})
			if err != nil {
				t.Fatal(err)
			}
			set := fetchJWKS(t, srv.URL+"/jwks")
			if _, err := jws.Verify([]byte(tok), jws.WithKeySet(set)); err != nil {
				t.Fatalf("verify with served JWKS: %v", err)
			}
			hdr := decodeHeader(t, tok)
			if hdr["alg"] != tc.kind || hdr["kid"] != kid {
				t.Errorf("header = %v, want alg %s kid %s", hdr, tc.kind, kid)
			}
			k, ok := set.LookupKeyID(kid)
			if !ok || k.KeyType().String() != tc.kty {
				t.Errorf("served key %q: found %v, kty %v, want %s", kid, ok, k, tc.kty)
			}
		})
	}
	if _, err := s.AddKey("HS256"); err == nil {
		t.Error("AddKey(HS256) succeeded, want an error")
	}
}

func TestSetKeyAlg(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	kid := s.SigningKID()
	for _, tc := range []struct {
		alg  string
		want any
	}{
		{"RS512", "RS512"},
		{"", nil},
	} {
		if err := s.SetKeyAlg(kid, tc.alg); err != nil {
			t.Fatal(err)
		}
		raw, err := s.JWKSJSON()
		if err != nil {
			t.Fatal(err)
		}
		var set struct{ Keys []map[string]any }
		if err := json.Unmarshal(raw, &set); err != nil {
			t.Fatal(err)
		}
		if got := set.Keys[0]["alg"]; got != tc.want {
			t.Errorf("SetKeyAlg(%q): served alg = %v, want %v", tc.alg, got, tc.want)
		}
	}
	// The signature algorithm does not follow the published one.
	tok, err := s.SignIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	if alg := decodeHeader(t, tok)["alg"]; alg != "RS256" {
		t.Errorf("alg after SetKeyAlg = %v, want RS256", alg)
	}
	if err := s.SetKeyAlg("nope", "RS256"); err == nil {
		t.Error("SetKeyAlg on an unknown kid succeeded")
	}
}

func TestSaveLoadKeysRoundTrip(t *testing.T) {
	s, _ := newTestSim(t, Options{})
	if _, err := s.Rotate("ES384"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := s.SaveKeys(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode = %o, want 600", mode)
	}

	loaded, err := LoadSim(path, Options{Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s.KIDs(), loaded.KIDs()); diff != "" {
		t.Errorf("kids (-saved +loaded):\n%s", diff)
	}
	if loaded.SigningKID() != s.SigningKID() {
		t.Errorf("signing kid = %q, want %q", loaded.SigningKID(), s.SigningKID())
	}
	wantJWKS, _ := s.JWKSJSON()
	gotJWKS, _ := loaded.JWKSJSON()
	if string(wantJWKS) != string(gotJWKS) {
		t.Errorf("JWKS differs after load:\n%s\n%s", wantJWKS, gotJWKS)
	}
	// A token signed by the loaded copy verifies against the original's keys.
	tok, err := loaded.SignIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	set, err := s.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify([]byte(tok), jws.WithKeySet(set)); err != nil {
		t.Errorf("loaded key's token does not verify against the saved JWKS: %v", err)
	}
}

func TestLoadSimErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, path := range map[string]string{
		"missing":      filepath.Join(dir, "nope.json"),
		"not json":     write("garbage.json", "{"),
		"no keys":      write("empty.json", `{"signingKid":"x","keys":[]}`),
		"bad pkcs8":    write("bad.json", `{"signingKid":"x","keys":[{"kid":"x","kind":"RS256","pkcs8":"AAAA"}]}`),
		"signing gone": write("gone.json", mustSaveWithSigning(t, "other")),
	} {
		if _, err := LoadSim(path, Options{}); err == nil {
			t.Errorf("%s: LoadSim succeeded, want an error", name)
		}
	}
}

// mustSaveWithSigning returns a valid key file's content whose signing kid
// names no key.
func mustSaveWithSigning(t *testing.T, signing string) string {
	t.Helper()
	raw, err := os.ReadFile(sharedKeys)
	if err != nil {
		t.Fatal(err)
	}
	var f keyFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	f.SigningKID = signing
	out, _ := json.Marshal(f)
	return string(out)
}

func TestSkippedKeysArePublished(t *testing.T) {
	s, err := New(Options{SkippedKeys: SkippedKeyKinds()})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.JWKSJSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keys) != 5 {
		t.Fatalf("%d keys, want the signing key and 4 skipped ones", len(doc.Keys))
	}
	signing := s.SigningKID()
	seen := map[string]bool{}
	for _, k := range doc.Keys {
		kid := k["kid"].(string)
		switch {
		case kid == signing:
			seen["signing"] = k["kty"] == "RSA" && k["d"] == nil && k["use"] == "sig"
		case strings.Contains(kid, SkippedSymmetric+"-"):
			seen["oct"] = k["kty"] == "oct" && k["k"] != nil
		case strings.Contains(kid, SkippedPrivate+"-"):
			seen["private"] = k["kty"] == "RSA" && k["d"] != nil
		case strings.Contains(kid, SkippedEncryption+"-"):
			seen["enc"] = k["use"] == "enc"
		case strings.Contains(kid, SkippedRSA1024+"-"):
			n, _ := k["n"].(string)
			seen["rsa1024"] = len(n) > 160 && len(n) < 180 // 128 bytes of base64url
		}
	}
	for _, want := range []string{"signing", "oct", "private", "enc", "rsa1024"} {
		if !seen[want] {
			t.Errorf("JWKS lacks a right %s key: %s", want, raw)
		}
	}
	if _, err := s.AddSkippedKey("rsa512"); err == nil {
		t.Error("AddSkippedKey accepted an unknown kind")
	}
}
