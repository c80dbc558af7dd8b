package trackunitsim

import (
	gocrypto "crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Serialization picks how Forge lays out a JWS.
type Serialization string

// The JWS serializations Forge writes.
const (
	Compact   Serialization = ""          // header.payload.signature
	Flattened Serialization = "flattened" // {"payload","protected","header","signature"}
	General   Serialization = "general"   // {"payload","signatures":[{...}]}
)

// HMACKeySource picks which bytes of the published public key serve as the
// HMAC secret of an HS* forgery (the classic RS256-to-HS256 confusion).
type HMACKeySource string

// The public key encodings an HS* forgery can use as its HMAC secret.
const (
	HMACPublicPEM      HMACKeySource = ""          // PKIX "PUBLIC KEY" PEM, trailing newline included (the default)
	HMACPublicDER      HMACKeySource = "der"       // PKIX DER
	HMACPublicPKCS1PEM HMACKeySource = "pem-pkcs1" // "RSA PUBLIC KEY" PEM (RSA only)
	HMACPublicPKCS1DER HMACKeySource = "der-pkcs1" // PKCS #1 DER (RSA only)
	HMACPublicJWK      HMACKeySource = "jwk"       // the key's JSON object as the JWKS serves it
)

// ForgeSpec describes an attack token for Forge. The zero value gives a
// correctly signed compact identity JWT, like SignIdentity(nil); each field
// bends one part of it.
type ForgeSpec struct {
	// Alg is the header's "alg" (default: the key's algorithm). "none" makes
	// an unsigned token with an empty signature; HS256/HS384/HS512 sign with
	// HMAC (see HMACKey). Another algorithm that fits the key (RS512 on an
	// RSA key) is used to sign; one that does not (ES256 on an RSA key) is
	// only written into the header and the key signs with its own algorithm.
	Alg string
	// SignAlg, when set, is the algorithm that really computes the signature,
	// whatever Alg says ("none" for no signature).
	SignAlg string
	// HMACKey picks the HMAC secret of an HS* signature from the signing
	// key's public key (default HMACPublicPEM).
	HMACKey HMACKeySource
	// HMACSecret, when non-nil, is the HMAC secret itself.
	HMACSecret []byte
	// SignKID picks the published key that signs (default: the signing key).
	SignKID string
	// FreshKey signs with a newly generated key of the same kind that is not
	// in the JWKS, while the header keeps the published key's kid.
	FreshKey bool
	// EmbedJWK puts the signer's public key into a "jwk" header; with
	// FreshKey this is the embedded-key attack.
	EmbedJWK bool
	// EmbedX5C puts a self-signed certificate of the signer's key into an
	// "x5c" header.
	EmbedX5C bool
	// Headers are merged over the protected header {alg, typ, kid, ...}: they
	// add jku/x5u/jwk/x5c/crit or any value, replace the kid with any string
	// (paths, SQL, 10 KB, control characters), and a nil value deletes a
	// member ("kid": nil for a token without kid). They win over Alg.
	Headers map[string]any
	// Claims are merged over the default identity claims (iat, exp, jti,
	// iss, aud) as in SignIdentity: nil deletes ("exp": nil), a time.Time
	// becomes a NumericDate, a string stays a string ("exp": "9999999999").
	Claims Claims
	// NoDefaultClaims starts from no claims at all instead of the defaults.
	NoDefaultClaims bool
	// RawHeader and RawPayload, when non-nil, are the exact JSON bytes of
	// the protected header and payload (duplicate keys, not JSON...).
	RawHeader, RawPayload []byte
	// RawSignature, when non-nil, replaces the signature bytes.
	RawSignature []byte
	// TamperSignature flips one bit of the signature.
	TamperSignature bool
	// Serialization is Compact (default), Flattened or General.
	Serialization Serialization
	// Unprotected is the JSON serializations' unprotected "header" member,
	// which the signature does not cover.
	Unprotected map[string]any
	// Outer members are merged over the top level of a JSON serialization
	// (nil deletes), e.g. a forged "payload" beside the real signature.
	Outer map[string]any
	// ExtraSignatures are appended to the General serialization's
	// "signatures" array as they are.
	ExtraSignatures []map[string]any
}

// Forge builds an identity token bent as spec says, for attack tests. It is
// assembled by hand (base64url header, payload and signature) because jwx
// refuses to write most of these.
func (s *Sim) Forge(spec ForgeSpec) (string, error) {
	k, err := s.key(spec.SignKID)
	if err != nil {
		return "", err
	}
	signer := k.priv
	if spec.FreshKey {
		if signer, err = generateKey(k.kind); err != nil {
			return "", err
		}
	}
	alg := spec.Alg
	if alg == "" {
		alg = k.kind
	}
	signAlg := spec.SignAlg
	if signAlg == "" {
		switch {
		case alg == "none", isHMAC(alg), fits(alg, signer):
			signAlg = alg
		default:
			signAlg = k.kind
		}
	}

	hdr := map[string]any{"alg": alg, "typ": "JWT", "kid": k.kid}
	if spec.EmbedJWK {
		m, err := publicJWK(simKey{kid: k.kid, kind: k.kind, alg: k.kind, priv: signer})
		if err != nil {
			return "", err
		}
		hdr["jwk"] = m
	}
	if spec.EmbedX5C {
		der, err := selfSignedCert(signer, s.opts.Now())
		if err != nil {
			return "", err
		}
		hdr["x5c"] = []string{base64.StdEncoding.EncodeToString(der)}
	}
	headerJSON := spec.RawHeader
	if headerJSON == nil {
		if headerJSON, err = json.Marshal(mergeClaims(hdr, spec.Headers)); err != nil {
			return "", fmt.Errorf("trackunitsim: encode header: %w", err)
		}
	}
	payload := spec.RawPayload
	if payload == nil {
		base := Claims{}
		if !spec.NoDefaultClaims {
			base = s.defaultClaims()
		}
		if payload, err = encodeClaims(mergeClaims(base, spec.Claims)); err != nil {
			return "", err
		}
	}

	b64 := base64.RawURLEncoding
	h64, p64 := b64.EncodeToString(headerJSON), b64.EncodeToString(payload)
	input := []byte(h64 + "." + p64)
	sig := spec.RawSignature
	if sig == nil {
		if sig, err = s.forgeSignature(spec, k, signer, signAlg, input); err != nil {
			return "", err
		}
	}
	if spec.TamperSignature && len(sig) > 0 {
		sig = append([]byte(nil), sig...)
		sig[0] ^= 0x01
	}
	s64 := b64.EncodeToString(sig)

	switch spec.Serialization {
	case Compact:
		return h64 + "." + p64 + "." + s64, nil
	case Flattened:
		out := map[string]any{"payload": p64, "protected": h64, "signature": s64}
		if spec.Unprotected != nil {
			out["header"] = spec.Unprotected
		}
		return marshalString(mergeClaims(out, spec.Outer))
	case General:
		first := map[string]any{"protected": h64, "signature": s64}
		if spec.Unprotected != nil {
			first["header"] = spec.Unprotected
		}
		sigs := append([]map[string]any{first}, spec.ExtraSignatures...)
		return marshalString(mergeClaims(map[string]any{"payload": p64, "signatures": sigs}, spec.Outer))
	}
	return "", fmt.Errorf("trackunitsim: unknown serialization %q", spec.Serialization)
}

// forgeSignature signs input with signAlg: nothing for "none", HMAC for HS*
// (keyed per spec by the published key), else the signer key through jwx.
func (s *Sim) forgeSignature(spec ForgeSpec, k simKey, signer gocrypto.Signer, signAlg string, input []byte) ([]byte, error) {
	switch {
	case signAlg == "none":
		return []byte{}, nil
	case isHMAC(signAlg):
		secret := spec.HMACSecret
		if secret == nil {
			var err error
			if secret, err = hmacSecret(k, spec.HMACKey); err != nil {
				return nil, err
			}
		}
		newHash := map[string]func() hash.Hash{"HS256": sha256.New, "HS384": sha512.New384, "HS512": sha512.New}[signAlg]
		mac := hmac.New(newHash, secret)
		mac.Write(input)
		return mac.Sum(nil), nil
	}
	js, err := jws.NewSigner(jwa.SignatureAlgorithm(signAlg))
	if err != nil {
		return nil, fmt.Errorf("trackunitsim: forge: %w", err)
	}
	sig, err := js.Sign(input, signer)
	if err != nil {
		return nil, fmt.Errorf("trackunitsim: forge %s: %w", signAlg, err)
	}
	return sig, nil
}

func isHMAC(alg string) bool {
	return alg == "HS256" || alg == "HS384" || alg == "HS512"
}

// fits reports whether alg can sign with the key's type (and curve).
func fits(alg string, priv gocrypto.Signer) bool {
	switch key := priv.(type) {
	case *rsa.PrivateKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case *ecdsa.PrivateKey:
		want := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[alg]
		return want != nil && key.Curve == want
	case ed25519.PrivateKey:
		return alg == "EdDSA"
	}
	return false
}

func marshalString(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("trackunitsim: encode jws: %w", err)
	}
	return string(b), nil
}
