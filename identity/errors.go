package identity

import "errors"

// ErrInvalid is matched (with errors.Is) by every rejection of an identity
// token, so callers answer 401 without knowing the individual reasons.
var ErrInvalid = errors.New("invalid identity token")

// Reasons a token is rejected. They are stable, low-cardinality strings fit
// for a metrics label; none of them carries any part of the token.
const (
	// ReasonMalformed: not three base64url parts, or a header or payload
	// that is not a JSON object, or a crit header we cannot honour.
	ReasonMalformed = "malformed"
	// ReasonTooLarge: the token is longer than 8 KiB.
	ReasonTooLarge = "too_large"
	// ReasonSerialization: the JWS JSON (general or flattened) serialization.
	ReasonSerialization = "serialization"
	// ReasonUnknownKID: no key in the JWKS has the token's kid, even after a
	// refetch (or a refetch was not allowed yet).
	ReasonUnknownKID = "unknown_kid"
	// ReasonKIDMissing: the token has no kid and the JWKS has more than one key.
	ReasonKIDMissing = "kid_missing"
	// ReasonAlg: alg is not an allowed asymmetric algorithm, or it does not
	// fit the chosen key's type, curve or own alg.
	ReasonAlg = "alg"
	// ReasonSignature: the signature does not verify with the chosen key.
	ReasonSignature = "signature"
	// ReasonExpMissing: the token has no exp claim.
	ReasonExpMissing = "exp_missing"
	// ReasonClaimType: a registered or checked claim has the wrong JSON type
	// (for example a string exp or a numeric accountId).
	ReasonClaimType = "claim_type"
	// ReasonExpired: exp plus the leeway has passed.
	ReasonExpired = "expired"
	// ReasonNotYetValid: nbf is later than now plus the leeway.
	ReasonNotYetValid = "not_yet_valid"
	// ReasonIATFuture: iat is later than now plus the leeway.
	ReasonIATFuture = "iat_future"
	// ReasonTooOld: iat is older than MaxAge plus the leeway.
	ReasonTooOld = "too_old"
	// ReasonIssuer: iss differs from the configured issuer.
	ReasonIssuer = "issuer"
	// ReasonAudience: aud does not contain the configured audience.
	ReasonAudience = "audience"
	// ReasonClaimMismatch: accountId or irisAppId differ from the request body.
	ReasonClaimMismatch = "claim_mismatch"
	// ReasonNoKeys: no key set has been loaded yet.
	ReasonNoKeys = "no_keys"
)

// Error is a rejected identity token. Its message is fixed per reason and
// never quotes the token, its kid or its alg: those are attacker-controlled
// and may be kilobytes of control characters.
type Error struct {
	// Reason is one of the Reason constants.
	Reason string
	msg    string
}

// Error describes the rejection without any part of the token.
func (e *Error) Error() string {
	if e.msg == "" {
		return "invalid identity token: " + e.Reason
	}
	return "invalid identity token: " + e.msg
}

// Unwrap makes every *Error match ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// reject builds the error for reason with a fixed, token-free explanation.
func reject(reason, msg string) *Error { return &Error{Reason: reason, msg: msg} }

// ReasonOf returns the Reason of an identity error, or "" when err is not one.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
