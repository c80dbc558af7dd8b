package trackunitsim

import (
	gocrypto "crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// simKey is one signing key of the simulated JWKS.
type simKey struct {
	kid  string
	kind string // the algorithm SignIdentity signs with
	alg  string // the "alg" published in the JWKS; "" leaves it out
	priv gocrypto.Signer
	// publish is "" for a normal key, else a kind of AddSkippedKey; secret
	// is the oct key's bytes.
	publish string
	secret  []byte
}

// KeyKinds lists the algorithms AddKey and Rotate accept.
func KeyKinds() []string {
	return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
}

// generateKey makes a private key for an algorithm of KeyKinds.
func generateKey(kind string) (gocrypto.Signer, error) {
	switch kind {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "EdDSA":
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("trackunitsim: unknown key kind %q (want one of %s)", kind, strings.Join(KeyKinds(), ", "))
}

// newKID returns a random key id that shows the key's kind.
func newKID(kind string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return strings.ToLower(kind) + "-" + hex.EncodeToString(b)
}

// AddKey generates a key of the given kind ("RS256", "PS256", "ES256",
// "ES384", "EdDSA", ... see KeyKinds) and publishes it in the JWKS. It becomes
// the signing key only when there is none; Rotate makes it the signing key.
func (s *Sim) AddKey(kind string) (kid string, err error) {
	priv, err := generateKey(kind)
	if err != nil {
		return "", err
	}
	k := &simKey{kid: newKID(kind), kind: kind, alg: kind, priv: priv}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k)
	if s.signingKID == "" {
		s.signingKID = k.kid
	}
	return k.kid, nil
}

// Rotate generates a key of the given kind and makes it the signing key. The
// old keys stay in the JWKS until RemoveKey.
func (s *Sim) Rotate(kind string) (kid string, err error) {
	kid, err = s.AddKey(kind)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signingKID = kid
	return kid, nil
}

// RemoveKey takes a key out of the JWKS. If it was the signing key, the most
// recently added remaining key signs from now on; with none left, signing
// fails with ErrNoSigningKey until AddKey or Rotate.
func (s *Sim) RemoveKey(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = slices.DeleteFunc(s.keys, func(k *simKey) bool { return k.kid == kid })
	if s.signingKID == kid {
		s.signingKID = ""
		if n := len(s.keys); n > 0 {
			s.signingKID = s.keys[n-1].kid
		}
	}
}

// SetKeyAlg changes the "alg" the JWKS publishes for a key ("" leaves the
// member out) without changing how SignIdentity signs with it, for tests of
// a verifier's alg checks.
func (s *Sim) SetKeyAlg(kid, alg string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keyLocked(kid)
	if k == nil {
		return fmt.Errorf("trackunitsim: no key %q", kid)
	}
	k.alg = alg
	return nil
}

// SigningKID returns the kid of the current signing key ("" when none).
func (s *Sim) SigningKID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.signingKID
}

// KIDs returns the kids of the published keys, oldest first.
func (s *Sim) KIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	kids := make([]string, 0, len(s.keys))
	for _, k := range s.keys {
		kids = append(kids, k.kid)
	}
	return kids
}

// keyLocked finds a key by kid; "" means the signing key. s.mu must be held.
func (s *Sim) keyLocked(kid string) *simKey {
	if kid == "" {
		kid = s.signingKID
	}
	for _, k := range s.keys {
		if k.kid == kid {
			return k
		}
	}
	return nil
}

// key returns a copy of a key by kid ("" = the signing key), so callers can
// sign without holding the lock.
func (s *Sim) key(kid string) (simKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keyLocked(kid)
	if k == nil {
		if kid == "" {
			return simKey{}, ErrNoSigningKey
		}
		return simKey{}, fmt.Errorf("trackunitsim: no key %q", kid)
	}
	return *k, nil
}

// publicJWK renders a key's public half as a JWK object with kid, use and alg.
func publicJWK(k simKey) (map[string]any, error) {
	var key any = k.priv.Public()
	switch k.publish {
	case SkippedSymmetric:
		key = k.secret
	case SkippedPrivate:
		key = k.priv
	}
	pub, err := jwk.FromRaw(key)
	if err != nil {
		return nil, fmt.Errorf("trackunitsim: public jwk: %w", err)
	}
	raw, err := json.Marshal(pub)
	if err != nil {
		return nil, fmt.Errorf("trackunitsim: marshal jwk: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("trackunitsim: unmarshal jwk: %w", err)
	}
	m["kid"] = k.kid
	m["use"] = "sig"
	if k.publish == SkippedEncryption {
		m["use"] = "enc"
	}
	if k.alg != "" {
		m["alg"] = k.alg
	}
	return m, nil
}

// JWKSJSON returns the public key set exactly as the JWKS routes serve it.
func (s *Sim) JWKSJSON() ([]byte, error) {
	s.mu.Lock()
	keys := make([]simKey, 0, len(s.keys))
	for _, k := range s.keys {
		keys = append(keys, *k)
	}
	s.mu.Unlock()
	set := struct {
		Keys []map[string]any `json:"keys"`
	}{Keys: []map[string]any{}}
	for _, k := range keys {
		m, err := publicJWK(k)
		if err != nil {
			return nil, err
		}
		set.Keys = append(set.Keys, m)
	}
	return json.Marshal(set)
}

// JWKS returns the public key set as a jwx set, for verifying in tests.
func (s *Sim) JWKS() (jwk.Set, error) {
	raw, err := s.JWKSJSON()
	if err != nil {
		return nil, err
	}
	return jwk.Parse(raw)
}

func (s *Sim) handleJWKS(w http.ResponseWriter, r *http.Request) {
	s.count(EndpointJWKS)
	if s.applyFault(w, r, EndpointJWKS) {
		return
	}
	raw, err := s.JWKSJSON()
	if err != nil {
		http.Error(w, "jwks unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(raw)
}
