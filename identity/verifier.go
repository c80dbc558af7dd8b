// Package identity verifies the Trackunit-Identity JWT that Trackunit sends
// with every app-install callback, and owns the cache of Trackunit's JWKS
// those tokens are checked against. It knows nothing of HTTP handlers: the
// api package hands it the header value and the body's ids.
//
// The token is parsed here rather than by jwt.Parse: the contract needs
// checks jwx does not make (a numeric exp, the kid-only key choice, alg
// fitting the key), and doing them on one pass keeps Verify cheaper than a
// bare jwx parse. Keys (jwk.ParseKey) and signatures (jws.NewVerifier) are
// jwx's.
package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// b64 is strict so that a token has exactly one encoding: non-zero padding
// bits would otherwise let one signature travel under several spellings.
var b64 = base64.RawURLEncoding.Strict()

var compactOnlyOnce sync.Once

// Verifier checks identity tokens against a JWKS it keeps fresh. It is safe
// for concurrent use; Run must be running for the key set to load.
type Verifier struct {
	cfg  Config
	keys atomic.Pointer[keySet]

	// refetch wakes Run for an on-demand fetch; buffered so senders never block.
	refetch chan struct{}
	// after makes Run's timers; tests replace it to drive refreshes by hand.
	after func(time.Duration) <-chan time.Time

	// tracer, when a TracerProvider is configured, spans each verification.
	tracer trace.Tracer

	mu           sync.Mutex
	running      bool
	pending      *fetchWait // the on-demand fetch requests are waiting for
	lastOnDemand time.Time  // when the last on-demand fetch was requested
}

// fetchWait is shared by every request waiting for one on-demand fetch.
type fetchWait struct{ done chan struct{} }

// New validates cfg and builds a Verifier. It does no network I/O: the
// first fetch happens in Run.
func New(cfg Config) (*Verifier, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// Nothing in this package uses jwt.Parse, but anything else in the
	// process that does must not accept JSON-serialized tokens, whose
	// unsigned outer members can override the signed claims.
	compactOnlyOnce.Do(func() { jwt.Settings(jwt.WithCompactOnly(true)) })
	v := &Verifier{
		cfg:     cfg,
		refetch: make(chan struct{}, 1),
		after:   time.After,
	}
	if cfg.TracerProvider != nil {
		v.tracer = cfg.TracerProvider.Tracer("github.com/irisx-broker/irisx-broker/identity")
	}
	return v, nil
}

// startSpan starts the verification's span; nil without a tracer.
func (v *Verifier) startSpan(ctx context.Context) (context.Context, trace.Span) {
	if v.tracer == nil {
		return ctx, nil
	}
	return v.tracer.Start(ctx, "identity.Verify")
}

// endSpan records the outcome: "ok" or the Reason constant, never the
// token, its claims or the error text.
func endSpan(span trace.Span, e *Error) {
	if span == nil {
		return
	}
	if e != nil {
		span.SetAttributes(attribute.String("irisx.identity.outcome", e.Reason))
		span.SetStatus(codes.Error, e.Reason)
	} else {
		span.SetAttributes(attribute.String("irisx.identity.outcome", "ok"))
	}
	span.End()
}

// Ready reports whether a key set has been loaded at least once.
func (v *Verifier) Ready() bool { return v.keys.Load() != nil }

// KeySetAge is the time since the last successful fetch, 0 if there was none.
func (v *Verifier) KeySetAge() time.Duration {
	s := v.keys.Load()
	if s == nil {
		return 0
	}
	return v.cfg.Now().Sub(s.fetchedAt)
}

// Verify checks token (an optional "Bearer " prefix is tolerated) and returns
// its identity. Every error matches ErrInvalid and is an *Error; none quotes
// the token. An unknown kid may wait, bounded by ctx, for a shared refetch.
func (v *Verifier) Verify(ctx context.Context, token string) (*Identity, error) {
	ctx, span := v.startSpan(ctx)
	id, e := v.verify(ctx, token, nil)
	endSpan(span, e)
	if e != nil {
		v.cfg.Observer.Rejected(e.Reason)
		return nil, e
	}
	return id, nil
}

// Check is Verify that also returns the token's Profile, accepted or
// refused, for the caller to log and record. Verify stays without it so
// that a refusal costs no more than it must.
func (v *Verifier) Check(ctx context.Context, token string) (*Identity, Profile, error) {
	var parts tokenParts
	ctx, span := v.startSpan(ctx)
	id, e := v.verify(ctx, token, &parts)
	endSpan(span, e)
	p := buildProfile(&parts, v.cfg.Now(), e)
	if e != nil {
		v.cfg.Observer.Rejected(e.Reason)
		return nil, p, e
	}
	return id, p, nil
}

// verify checks token; when parts is not nil it receives the decoded
// header and payload (as far as the token decodes) for the profile.
func (v *Verifier) verify(ctx context.Context, token string, parts *tokenParts) (*Identity, *Error) {
	// Length first, before any scan: a megabyte of dots costs nothing.
	if len(token) > MaxTokenBytes+len("Bearer ") {
		return nil, reject(ReasonTooLarge, "token is larger than 8 KiB")
	}
	token = strings.TrimSpace(token)
	if len(token) >= 7 && strings.EqualFold(token[:7], "Bearer ") {
		token = strings.TrimLeft(token[7:], " ")
	}
	if len(token) > MaxTokenBytes {
		return nil, reject(ReasonTooLarge, "token is larger than 8 KiB")
	}
	if token == "" {
		return nil, reject(ReasonMalformed, "token is empty")
	}
	if token[0] == '{' {
		return nil, reject(ReasonSerialization, "only the compact serialization is accepted")
	}
	d1 := strings.IndexByte(token, '.')
	if d1 <= 0 {
		return nil, reject(ReasonMalformed, "token is not three base64url parts")
	}
	d2 := strings.IndexByte(token[d1+1:], '.') + d1 + 1
	if d2 <= d1+1 || strings.IndexByte(token[d2+1:], '.') >= 0 {
		return nil, reject(ReasonMalformed, "token is not three base64url parts")
	}

	// One copy of the token serves as the signing input and the base64
	// source; one buffer holds all three decoded parts.
	buf := []byte(token)
	hl, pl := b64.DecodedLen(d1), b64.DecodedLen(d2-d1-1)
	dec := make([]byte, hl+pl+b64.DecodedLen(len(buf)-d2-1))
	hn, err1 := b64.Decode(dec[:hl], buf[:d1])
	pn, err2 := b64.Decode(dec[hl:hl+pl], buf[d1+1:d2])
	sn, err3 := b64.Decode(dec[hl+pl:], buf[d2+1:])
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, reject(ReasonMalformed, "token is not three base64url parts")
	}
	payload, sig := dec[hl:hl+pn], dec[hl+pl:hl+pl+sn]
	if parts != nil {
		parts.header, parts.payload = dec[:hn], payload
	}

	h, e := parseHeader(dec[:hn])
	if e != nil {
		return nil, e
	}
	if len(sig) == 0 {
		return nil, reject(ReasonSignature, "token is not signed")
	}

	key, e := v.chooseKey(ctx, h.Kid)
	if e != nil {
		return nil, e
	}
	if !key.fits(h.Alg) {
		return nil, reject(ReasonAlg, "alg does not fit the key")
	}
	verifier, err := jws.NewVerifier(jwa.SignatureAlgorithm(h.Alg))
	if err != nil {
		return nil, reject(ReasonAlg, "alg is not supported")
	}
	if err := verifier.Verify(buf[:d2], sig, key.pub); err != nil {
		return nil, reject(ReasonSignature, "signature does not verify")
	}
	return v.checkClaims(payload)
}

// chooseKey finds the key for kid in the current set. A miss (or no set at
// all) asks Run for a refetch, unless one was asked within the cooldown, and
// looks once more after it; waiting requests share that one fetch.
func (v *Verifier) chooseKey(ctx context.Context, kid string) (*verifyKey, *Error) {
	if s := v.keys.Load(); s != nil {
		k, reason := s.lookup(kid)
		if k != nil {
			return k, nil
		}
		if reason == ReasonKIDMissing {
			// A refetch cannot give a kid to the token.
			return nil, reject(reason, "token has no kid and the JWKS has several keys")
		}
	}
	if w := v.requestRefetch(); w != nil {
		select {
		case <-w.done:
		case <-ctx.Done():
		}
	}
	s := v.keys.Load()
	if s == nil {
		return nil, reject(ReasonNoKeys, "no signing keys are loaded")
	}
	k, reason := s.lookup(kid)
	if k == nil {
		if reason == ReasonKIDMissing {
			return nil, reject(reason, "token has no kid and the JWKS has several keys")
		}
		return nil, reject(reason, "no key in the JWKS has the token's kid")
	}
	return k, nil
}

// header is the part of the JOSE header we act on. jku, x5u, jwk and x5c are
// deliberately absent: keys come only from the configured JWKS.
type header struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

// parseHeader decodes the protected header and applies the alg allow-list,
// before any key lookup can trigger a refetch.
func parseHeader(b []byte) (header, *Error) {
	var h header
	if !isObject(b) || json.Unmarshal(b, &h) != nil {
		return h, reject(ReasonMalformed, "header is not a valid JSON object")
	}
	if h.Crit != nil {
		// RFC 7515 4.1.11: extensions listed in crit must be understood;
		// we understand none (b64=false included).
		return h, reject(ReasonMalformed, "header has crit extensions")
	}
	if !allowedAlg(h.Alg) {
		return h, reject(ReasonAlg, "alg is not an allowed asymmetric algorithm")
	}
	return h, nil
}
