package trackunitsim

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// IdentityTTL is the lifetime of a signed identity JWT (exp - iat).
const IdentityTTL = 5 * time.Minute

// Claims are JWT claims. A time.Time value is written as a NumericDate (Unix
// seconds); any other value is marshalled as JSON as it is, so a string "exp"
// stays a string.
type Claims map[string]any

// SignIdentity returns a compact JWT like Trackunit's Trackunit-Identity
// header, signed by the current signing key with its algorithm and kid. The
// claims are iat=now, exp=now+5m, a random jti, iss and aud when the Options
// name them, then extra: a key in extra overrides, and a nil value deletes the
// claim.
func (s *Sim) SignIdentity(extra Claims) (string, error) {
	return s.SignIdentityWith("", extra)
}

// SignIdentityWith is SignIdentity with the key chosen by kid ("" = the
// signing key), for tokens from a published key that is not the current one.
func (s *Sim) SignIdentityWith(kid string, extra Claims) (string, error) {
	k, err := s.key(kid)
	if err != nil {
		return "", err
	}
	payload, err := encodeClaims(mergeClaims(s.defaultClaims(), extra))
	if err != nil {
		return "", err
	}
	hdr := jws.NewHeaders()
	for name, v := range map[string]any{jws.KeyIDKey: k.kid, jws.TypeKey: "JWT"} {
		if err := hdr.Set(name, v); err != nil {
			return "", fmt.Errorf("trackunitsim: header %s: %w", name, err)
		}
	}
	tok, err := jws.Sign(payload, jws.WithKey(jwa.SignatureAlgorithm(k.kind), k.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("trackunitsim: sign identity: %w", err)
	}
	return string(tok), nil
}

// defaultClaims are the claims every identity JWT starts from.
func (s *Sim) defaultClaims() Claims {
	now := s.opts.Now()
	c := Claims{
		"iat": now,
		"exp": now.Add(IdentityTTL),
		"jti": randomToken(16),
	}
	if s.opts.Issuer != "" {
		c["iss"] = s.opts.Issuer
	}
	if s.opts.Audience != "" {
		c["aud"] = s.opts.Audience
	}
	return c
}

// mergeClaims copies over onto base: a nil value deletes the key.
func mergeClaims(base Claims, over map[string]any) Claims {
	out := make(Claims, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

// encodeClaims marshals claims, turning time.Time values into NumericDates.
func encodeClaims(c Claims) ([]byte, error) {
	enc := make(map[string]any, len(c))
	for k, v := range c {
		if t, ok := v.(time.Time); ok {
			v = t.Unix()
		}
		enc[k] = v
	}
	b, err := json.Marshal(enc)
	if err != nil {
		return nil, fmt.Errorf("trackunitsim: encode claims: %w", err)
	}
	return b, nil
}

// randomToken returns n random bytes, base64url encoded without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}
