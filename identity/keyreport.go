package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// KeyReport is what the broker made of one JWKS entry: its public
// parameters and whether verification uses it, and if not, why. Strings
// come from the fetched document and are cut and escaped.
type KeyReport struct {
	Kid, Kty, Alg, Use string
	// Bits is the size of an RSA modulus or symmetric key; Curve names an
	// EC or OKP curve. Both are empty when unknown.
	Bits  int
	Curve string
	// Usable says whether Verify may use the key; Skip is why not.
	Usable bool
	Skip   string
}

// Size is the key's size or curve for display ("2048 bits", "P-256").
func (r KeyReport) Size() string {
	switch {
	case r.Curve != "":
		return r.Curve
	case r.Bits > 0:
		return fmt.Sprintf("%d bits", r.Bits)
	}
	return "-"
}

// NoUsableKeyError is a JWKS without a single key the broker can use; its
// Reports say why each entry was skipped.
type NoUsableKeyError struct {
	Reports []KeyReport
}

func (e *NoUsableKeyError) Error() string {
	return fmt.Sprintf("JWKS has no usable signing key (%d skipped)", len(e.Reports))
}

// FetchKeys fetches the JWKS once, as Run does (same client, time-out and
// size cap), makes it the current set when it holds a usable key, and
// returns what was made of each entry. With no usable key the error is a
// *NoUsableKeyError and the reports are returned too. It is for
// `irisx-broker identity check`, which does not start Run.
func (v *Verifier) FetchKeys(ctx context.Context) ([]KeyReport, error) {
	_, err := v.fetch(ctx)
	var nu *NoUsableKeyError
	if errors.As(err, &nu) {
		return nu.Reports, err
	}
	if err != nil {
		return nil, err
	}
	return v.keys.Load().reports, nil
}

// describeRaw reads the members a report shows straight from the JSON, so
// that an entry jwx cannot parse is still described.
func describeRaw(raw json.RawMessage) KeyReport {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return KeyReport{Kty: "<not an object>"}
	}
	return KeyReport{
		Kid:   profileString(m["kid"]),
		Kty:   profileString(m["kty"]),
		Alg:   profileString(m["alg"]),
		Use:   profileString(m["use"]),
		Curve: profileString(m["crv"]),
	}
}

// describe adds what only the parsed key knows: its size.
func (r *KeyReport) describe(k jwk.Key) {
	var raw any
	if k.Raw(&raw) != nil {
		return
	}
	switch p := raw.(type) {
	case *rsa.PublicKey:
		if p.N != nil {
			r.Bits = p.N.BitLen()
		}
	case *rsa.PrivateKey:
		if p.N != nil {
			r.Bits = p.N.BitLen()
		}
	case *ecdsa.PublicKey, *ecdsa.PrivateKey:
		// crv already came from the JSON.
	case []byte:
		r.Bits = 8 * len(p)
	}
	if r.Kty == "" {
		r.Kty = strings.ToUpper(string(k.KeyType()))
	}
}
