package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"strings"

	"connectrpc.com/connect"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// tokenSet holds accepted bearer tokens as SHA-256 digests, so a check
// compares equal-length values in constant time whatever was presented.
type tokenSet [][sha256.Size]byte

func newTokenSet(tokens []crypto.Secret) tokenSet {
	s := make(tokenSet, 0, len(tokens))
	for _, t := range tokens {
		s = append(s, sha256.Sum256([]byte(t.Reveal())))
	}
	return s
}

// contains checks every token, not stopping at a match, so the time taken
// says nothing about which token matched or how much of one did.
func (s tokenSet) contains(presented string) bool {
	if presented == "" {
		return false
	}
	d := sha256.Sum256([]byte(presented))
	found := 0
	for i := range s {
		found |= subtle.ConstantTimeCompare(d[:], s[i][:])
	}
	return found == 1
}

// bearer extracts the token of an `Authorization: Bearer` header.
func bearer(header string) string {
	const prefix = "bearer "
	if len(header) > len(prefix) && strings.EqualFold(header[:len(prefix)], prefix) {
		return strings.TrimSpace(header[len(prefix):])
	}
	return ""
}

var errUnauthenticated = errors.New("missing or wrong bearer token")

// authInterceptor admits only calls bearing one of tokens.
func authInterceptor(tokens tokenSet) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if !tokens.contains(bearer(req.Header().Get("Authorization"))) {
				return nil, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated)
			}
			return next(ctx, req)
		}
	}
}
