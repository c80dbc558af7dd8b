package trackunitsim

import (
	gocrypto "crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"
)

// PublicKey returns the public key of a published key ("" = the signing key):
// an *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey.
func (s *Sim) PublicKey(kid string) (gocrypto.PublicKey, error) {
	k, err := s.key(kid)
	if err != nil {
		return nil, err
	}
	return k.priv.Public(), nil
}

// hmacSecret encodes a key's public half as src says.
func hmacSecret(k simKey, src HMACKeySource) ([]byte, error) {
	pub := k.priv.Public()
	switch src {
	case HMACPublicPEM, HMACPublicDER:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("trackunitsim: encode public key: %w", err)
		}
		if src == HMACPublicDER {
			return der, nil
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
	case HMACPublicPKCS1PEM, HMACPublicPKCS1DER:
		rpub, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("trackunitsim: %s needs an RSA key, key %q is %s", src, k.kid, k.kind)
		}
		der := x509.MarshalPKCS1PublicKey(rpub)
		if src == HMACPublicPKCS1DER {
			return der, nil
		}
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: der}), nil
	case HMACPublicJWK:
		m, err := publicJWK(k)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("trackunitsim: encode jwk: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("trackunitsim: unknown HMAC key source %q", src)
}

// selfSignedCert returns the DER of a day-long self-signed certificate for
// priv, for x5c forgeries.
func selfSignedCert(priv gocrypto.Signer, now time.Time) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "trackunit-sim forged signer"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, fmt.Errorf("trackunitsim: self-signed certificate: %w", err)
	}
	return der, nil
}
