package identity

import (
	"context"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// benchCases are tokens valid against the real clock, so that bare jwx
// (which validates exp with time.Now) accepts them too.
func benchCases(b *testing.B) []struct {
	name string
	key  *testKey
	tok  string
} {
	testKeys(b)
	now := time.Now()
	claims := with(validClaims(), map[string]any{"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	var out []struct {
		name string
		key  *testKey
		tok  string
	}
	for _, k := range []*testKey{rsaA, ec256, edKey} {
		out = append(out, struct {
			name string
			key  *testKey
			tok  string
		}{k.alg, k, mint(b, k, "", claims, nil)})
	}
	return out
}

// BenchmarkVerify measures Verify with a loaded key set under the
// production-like config (iss, aud, leeway, max age all checked).
func BenchmarkVerify(b *testing.B) {
	cfg := defaultConfig()
	cfg.JWKSURL = "http://127.0.0.1:1/jwks"
	v, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	set, _, err := parseKeySet(jwksJSON(b, defaultKeys(b)...), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	v.keys.Store(set)
	ctx := context.Background()
	for _, c := range benchCases(b) {
		b.Run(c.name, func(b *testing.B) {
			if _, err := v.Verify(ctx, c.tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, c.tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBareJWX is the baseline: jwx parsing and verifying the same
// token with the one right key and its default validation.
func BenchmarkBareJWX(b *testing.B) {
	for _, c := range benchCases(b) {
		b.Run(c.name, func(b *testing.B) {
			alg := jwa.SignatureAlgorithm(c.key.alg)
			tok := []byte(c.tok)
			if _, err := jwt.Parse(tok, jwt.WithKey(alg, c.key.pub)); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := jwt.Parse(tok, jwt.WithKey(alg, c.key.pub)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
