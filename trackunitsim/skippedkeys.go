package trackunitsim

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"strings"
)

// Kinds of AddSkippedKey: keys the JWKS publishes that a correct verifier
// must skip, for tests of `irisx-broker identity check` and of the key set.
const (
	// SkippedRSA1024 is an RS256 key of only 1024 bits.
	SkippedRSA1024 = "rsa1024"
	// SkippedSymmetric is an HS256 secret published as a kty "oct" JWK.
	SkippedSymmetric = "oct"
	// SkippedPrivate is an RSA key published with its private half.
	SkippedPrivate = "private"
	// SkippedEncryption is an RSA public key for encryption ("use":"enc").
	SkippedEncryption = "enc"
)

// SkippedKeyKinds lists the kinds AddSkippedKey accepts.
func SkippedKeyKinds() []string {
	return []string{SkippedRSA1024, SkippedSymmetric, SkippedPrivate, SkippedEncryption}
}

// AddSkippedKey publishes a key of one of SkippedKeyKinds. It never becomes
// the signing key by itself, though SignIdentityWith can sign with it (an
// RS256 signature whatever it publishes), so tests can send tokens naming it.
func (s *Sim) AddSkippedKey(kind string) (kid string, err error) {
	bits := 2048
	switch kind {
	case SkippedRSA1024:
		bits = 1024
	case SkippedSymmetric, SkippedPrivate, SkippedEncryption:
	default:
		return "", fmt.Errorf("trackunitsim: unknown skipped key kind %q (want one of %s)", kind, strings.Join(SkippedKeyKinds(), ", "))
	}
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return "", err
	}
	k := &simKey{kid: "skipped-" + newKID(kind), kind: "RS256", alg: "RS256", priv: priv, publish: kind}
	switch kind {
	case SkippedSymmetric:
		k.alg, k.secret = "HS256", make([]byte, 32)
		_, _ = rand.Read(k.secret)
	case SkippedEncryption:
		k.alg = "RSA-OAEP-256"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k)
	return k.kid, nil
}
