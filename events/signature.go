package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// secretPrefix starts a Standard Webhooks secret; the rest is the base64
// of the HMAC key.
const secretPrefix = "whsec_"

// Signer signs webhook bodies under one secret.
type Signer struct{ key []byte }

// NewSigner parses a "whsec_<base64>" secret.
func NewSigner(secret crypto.Secret) (*Signer, error) {
	s, ok := strings.CutPrefix(secret.Reveal(), secretPrefix)
	if !ok {
		return nil, errors.New("events: webhook secret must start with whsec_")
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(key) == 0 {
		return nil, errors.New("events: webhook secret is not whsec_ followed by base64")
	}
	return &Signer{key: key}, nil
}

// Sign returns the webhook-signature header value for one delivery:
// "v1," and the base64 HMAC-SHA256 of "id.timestamp.body".
func (s *Signer) Sign(id string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(ts.Unix(), 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
