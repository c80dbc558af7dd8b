package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// minRSABits refuses RSA keys too short to trust; Go itself refuses < 1024.
const minRSABits = 2048

type keyFamily uint8

const (
	familyRSA keyFamily = iota + 1
	familyEC
	familyOKP
)

// verifyKey is one usable public key from the JWKS, reduced to what the
// hot path needs so that Verify does no jwk.Key method calls.
type verifyKey struct {
	kid    string
	family keyFamily
	// ecAlg is the one ES algorithm an EC key's curve allows.
	ecAlg string
	// alg is the JWK's own alg, "" when it has none.
	alg string
	pub any
}

// fits reports whether a token signed with alg may be verified by k:
// the key's type (and curve) must match, and the key's own alg if it has one.
func (k *verifyKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch k.family {
	case familyRSA:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case familyEC:
		return alg == k.ecAlg
	case familyOKP:
		return alg == "EdDSA"
	}
	return false
}

// allowedAlg is the contract's list of signature algorithms. A switch, not a
// map, so that the per-request check costs nothing.
func allowedAlg(alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA":
		return true
	}
	return false
}

// keySet is an immutable snapshot of the JWKS; it is swapped whole.
type keySet struct {
	byKID map[string]*verifyKey
	// only is the single key when the set has exactly one, for tokens without kid.
	only      *verifyKey
	count     int
	fetchedAt time.Time
	// reports say, per JWKS entry in order, what was made of it.
	reports []KeyReport
}

// lookup chooses the key for a token's kid ("" when it has none).
func (s *keySet) lookup(kid string) (*verifyKey, string) {
	if kid == "" {
		if s.only == nil {
			return nil, ReasonKIDMissing
		}
		return s.only, ""
	}
	if k, ok := s.byKID[kid]; ok {
		return k, ""
	}
	return nil, ReasonUnknownKID
}

// parseKeySet turns a JWKS document into a keySet. Keys that cannot be used
// for verification (symmetric, private, encryption-only, unknown types,
// weak RSA, curves outside the contract) are skipped, one bad key not
// spoiling the rest; a set with no usable key at all is a *NoUsableKeyError,
// so that the caller keeps its last good set. Each entry's KeyReport says
// which and why: the verifier and `identity check` share this one decision.
func parseKeySet(body []byte, fetchedAt time.Time) (*keySet, int, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Keys == nil {
		return nil, 0, errors.New("JWKS is not a JSON object with a keys array")
	}
	set := &keySet{byKID: make(map[string]*verifyKey, len(doc.Keys)), fetchedAt: fetchedAt}
	skipped := 0
	for _, raw := range doc.Keys {
		rep, vk := judgeKey(raw)
		if vk != nil && vk.kid != "" {
			if _, dup := set.byKID[vk.kid]; dup {
				// The first key with a kid wins: trying several keys per
				// token would multiply the cost of every bad signature.
				rep.Usable, rep.Skip, vk = false, "duplicate kid: the first key with it is used", nil
			} else {
				set.byKID[vk.kid] = vk
			}
		}
		set.reports = append(set.reports, rep)
		if vk == nil {
			skipped++
			continue
		}
		set.count++
		set.only = vk
	}
	if set.count != 1 {
		set.only = nil
	}
	if set.count == 0 {
		return nil, skipped, &NoUsableKeyError{Reports: set.reports}
	}
	return set, skipped, nil
}

// judgeKey reports on one JWKS entry and, when usable, returns its key.
func judgeKey(raw json.RawMessage) (KeyReport, *verifyKey) {
	rep := describeRaw(raw)
	k, err := jwk.ParseKey(raw)
	if err != nil {
		rep.Skip = "not a JWK the broker can parse"
		return rep, nil
	}
	rep.describe(k)
	vk, err := usableKey(k)
	if err != nil {
		rep.Skip = err.Error()
		return rep, nil
	}
	rep.Usable = true
	return rep, vk
}

// usableKey checks one JWK and extracts its raw public key.
func usableKey(k jwk.Key) (*verifyKey, error) {
	if use := k.KeyUsage(); use != "" && use != "sig" {
		return nil, errors.New("key is not for signatures")
	}
	if ops := k.KeyOps(); len(ops) > 0 && !slices.Contains(ops, jwk.KeyOpVerify) {
		return nil, errors.New("key_ops does not allow verify")
	}
	vk := &verifyKey{kid: k.KeyID()}
	if a := k.Algorithm(); a != nil {
		vk.alg = a.String()
	}

	// Private types first: a private OKP key also satisfies OKPPublicKey.
	switch k := k.(type) {
	case jwk.SymmetricKey:
		return nil, errors.New("symmetric key: only asymmetric signatures are accepted")
	case jwk.RSAPrivateKey, jwk.ECDSAPrivateKey, jwk.OKPPrivateKey:
		return nil, errors.New("private key: a JWKS must publish public keys only")
	case jwk.RSAPublicKey:
		var pub rsa.PublicKey
		if err := k.Raw(&pub); err != nil {
			return nil, err
		}
		if pub.N == nil || pub.E < 3 || pub.E%2 == 0 {
			return nil, errors.New("invalid RSA key")
		}
		if pub.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("weak RSA key: %d bits, fewer than %d", pub.N.BitLen(), minRSABits)
		}
		vk.family, vk.pub = familyRSA, &pub
	case jwk.ECDSAPublicKey:
		switch k.Crv() {
		case jwa.P256:
			vk.ecAlg = "ES256"
		case jwa.P384:
			vk.ecAlg = "ES384"
		case jwa.P521:
			vk.ecAlg = "ES512"
		default:
			return nil, errors.New("EC curve not allowed")
		}
		var pub ecdsa.PublicKey
		if err := k.Raw(&pub); err != nil {
			return nil, err
		}
		// ECDH rejects points off the curve and the point at infinity.
		if _, err := pub.ECDH(); err != nil {
			return nil, errors.New("invalid EC point")
		}
		vk.family, vk.pub = familyEC, &pub
	case jwk.OKPPublicKey:
		if k.Crv() != jwa.Ed25519 {
			return nil, errors.New("OKP curve not allowed")
		}
		var pub ed25519.PublicKey
		if err := k.Raw(&pub); err != nil {
			return nil, err
		}
		if len(pub) != ed25519.PublicKeySize {
			return nil, errors.New("invalid Ed25519 key")
		}
		vk.family, vk.pub = familyOKP, pub
	default:
		return nil, errors.New("unsupported key type")
	}
	if vk.alg != "" && (!allowedAlg(vk.alg) || !vk.fits(vk.alg)) {
		return nil, errors.New("key alg not allowed for its type")
	}
	return vk, nil
}
