// Package trackunitsim is a local stand-in for Trackunit, for development and
// tests: it serves a marketplace JWKS, the /apptoken (client_credentials) and
// /token (password and rotating refresh_token) and /token/v2 endpoints, signs and sends
// install callbacks with a Trackunit-Identity JWT, forges malformed and
// malicious identity tokens for attack tests, and injects faults (error
// bodies, 429 with Retry-After, latency, hangs, revoked credentials; for
// tests also sequences of them, exact raw answers, answers held back or
// dropped after the request was handled) and, on request, records what the
// client-credentials endpoints received and answered.
//
// It imports nothing from this module but crypto (for crypto.Secret), so the
// service's own tests can depend on it without cycles. All state sits behind
// one mutex; a Sim is safe for concurrent use.
package trackunitsim
