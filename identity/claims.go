package identity

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"
)

// Identity is what a verified Trackunit-Identity token says.
type Identity struct {
	// IssuedAt is the iat claim; zero when the JWT has no iat.
	IssuedAt time.Time
	// ExpiresAt is the exp claim.
	ExpiresAt time.Time
	// JTI is the jti claim, "" when absent.
	JTI string
	// AccountID is the accountId claim when HasAccountID.
	AccountID string
	// IrisAppID is the irisAppId claim when HasIrisAppID.
	IrisAppID string
	// HasAccountID and HasIrisAppID tell an absent claim from an empty one.
	HasAccountID, HasIrisAppID bool
}

// CheckBody enforces the contract's rule that a token carrying accountId or
// irisAppId speaks for that install only: each claim present must equal the
// install body's value. The error wraps ErrInvalid with ReasonClaimMismatch;
// the caller records it as a rejection.
func (id *Identity) CheckBody(irisAppID, accountID string) error {
	if id.HasAccountID && id.AccountID != accountID {
		return reject(ReasonClaimMismatch, "accountId claim differs from the request body")
	}
	if id.HasIrisAppID && id.IrisAppID != irisAppID {
		return reject(ReasonClaimMismatch, "irisAppId claim differs from the request body")
	}
	return nil
}

// claims are the payload members we act on. Time claims, aud and the two
// install claims stay raw so that their JSON type is checked here: the
// standard decoders (jwx's included) accept a string exp.
type claims struct {
	Exp       json.RawMessage `json:"exp"`
	Nbf       json.RawMessage `json:"nbf"`
	Iat       json.RawMessage `json:"iat"`
	Iss       string          `json:"iss"`
	Aud       json.RawMessage `json:"aud"`
	Jti       string          `json:"jti"`
	AccountID json.RawMessage `json:"accountId"`
	IrisAppID json.RawMessage `json:"irisAppId"`
}

// maxNumericDate is 9999-12-31T23:59:59Z; later dates are nonsense and would
// overflow time arithmetic.
const maxNumericDate = 253402300799

// checkClaims decodes the verified payload and applies the time, issuer and
// audience rules.
func (v *Verifier) checkClaims(payload []byte) (*Identity, *Error) {
	if !isObject(payload) {
		return nil, reject(ReasonMalformed, "payload is not a JSON object")
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, reject(ReasonClaimType, "a claim has the wrong JSON type")
		}
		return nil, reject(ReasonMalformed, "payload is not valid JSON")
	}

	cfg := &v.cfg
	now := cfg.Now()
	id := &Identity{JTI: c.Jti}

	if c.Exp == nil {
		return nil, reject(ReasonExpMissing, "exp claim is required")
	}
	exp, ok := numericDate(c.Exp)
	if !ok {
		return nil, reject(ReasonClaimType, "exp is not a NumericDate")
	}
	if !now.Before(exp.Add(cfg.Leeway)) {
		return nil, reject(ReasonExpired, "token has expired")
	}
	id.ExpiresAt = exp

	if c.Nbf != nil {
		nbf, ok := numericDate(c.Nbf)
		if !ok {
			return nil, reject(ReasonClaimType, "nbf is not a NumericDate")
		}
		if nbf.After(now.Add(cfg.Leeway)) {
			return nil, reject(ReasonNotYetValid, "token is not valid yet")
		}
	}
	if c.Iat != nil {
		iat, ok := numericDate(c.Iat)
		if !ok {
			return nil, reject(ReasonClaimType, "iat is not a NumericDate")
		}
		if iat.After(now.Add(cfg.Leeway)) {
			return nil, reject(ReasonIATFuture, "token was issued in the future")
		}
		// MaxAge is applied as configured, without the leeway: the contract
		// refuses any iat older than IDENTITY_MAX_AGE, and an operator who
		// expects skew can raise the maximum age itself.
		if now.Sub(iat) > cfg.MaxAge {
			return nil, reject(ReasonTooOld, "token is older than the maximum age")
		}
		id.IssuedAt = iat
	}

	if cfg.Issuer != "" && c.Iss != cfg.Issuer {
		return nil, reject(ReasonIssuer, "issuer does not match")
	}
	if cfg.Audience != "" {
		if e := checkAudience(c.Aud, cfg.Audience); e != nil {
			return nil, e
		}
	}

	if c.AccountID != nil {
		s, ok := jsonString(c.AccountID)
		if !ok {
			return nil, reject(ReasonClaimType, "accountId is not a string")
		}
		id.AccountID, id.HasAccountID = s, true
	}
	if c.IrisAppID != nil {
		s, ok := jsonString(c.IrisAppID)
		if !ok {
			return nil, reject(ReasonClaimType, "irisAppId is not a string")
		}
		id.IrisAppID, id.HasIrisAppID = s, true
	}
	return id, nil
}

// checkAudience accepts aud as one string or an array of strings.
func checkAudience(raw json.RawMessage, want string) *Error {
	if raw == nil {
		return reject(ReasonAudience, "audience is missing")
	}
	switch raw[0] {
	case '"':
		s, ok := jsonString(raw)
		if !ok {
			return reject(ReasonClaimType, "aud is not a string")
		}
		if s == want {
			return nil
		}
	case '[':
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil {
			return reject(ReasonClaimType, "aud is not an array of strings")
		}
		for _, s := range list {
			if s == want {
				return nil
			}
		}
	default:
		return reject(ReasonClaimType, "aud is not a string or array")
	}
	return reject(ReasonAudience, "audience does not match")
}

// numericDate parses a JSON number of seconds since the epoch (RFC 7519
// NumericDate, fractions allowed). Strings, null, booleans, negative and
// absurdly large values are refused.
func numericDate(raw json.RawMessage) (time.Time, bool) {
	if len(raw) == 0 || raw[0] < '0' || raw[0] > '9' {
		return time.Time{}, false
	}
	// Fast path for the usual integer seconds, without allocating.
	if len(raw) <= 12 {
		var n int64
		integer := true
		for _, b := range raw {
			if b < '0' || b > '9' {
				integer = false
				break
			}
			n = n*10 + int64(b-'0')
		}
		if integer {
			if n > maxNumericDate {
				return time.Time{}, false
			}
			return time.Unix(n, 0), true
		}
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return time.Time{}, false
	}
	sec := math.Floor(f)
	return time.Unix(int64(sec), int64((f-sec)*1e9)), true
}

// jsonString decodes a JSON string value; anything else is refused.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		// The decoder has validated raw already; without escapes the
		// contents are the string itself.
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// isObject reports whether b is, syntactically at its start, a JSON object.
// It sends arrays and scalars to ReasonMalformed instead of to a type error.
func isObject(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '{':
			return true
		default:
			return false
		}
	}
	return false
}
