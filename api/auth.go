package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// tokenSet holds accepted bearer tokens as SHA-256 digests, so a check
// compares equal-length values in constant time whatever was presented.
type tokenSet [][sha256.Size]byte

func newTokenSet(tokens ...[]crypto.Secret) tokenSet {
	var s tokenSet
	for _, list := range tokens {
		for _, t := range list {
			s = append(s, sha256.Sum256([]byte(t.Reveal())))
		}
	}
	return s
}

// union is a set accepting the tokens of both (EventService takes admin or
// internal tokens).
func (s tokenSet) union(o tokenSet) tokenSet {
	return append(append(tokenSet{}, s...), o...)
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

// requestBodyLimit caps the bytes read off the wire for one Connect call.
// Every procedure takes one request message of at most maxMessageBytes
// after decompression; its compressed form (or gRPC envelope) is at most a
// little larger, so twice the message limit only ever refuses abuse. It
// also ends the read-to-the-end Connect does after refusing an oversized
// message, which would otherwise drain a 100 MB body.
const requestBodyLimit = 2 * maxMessageBytes

// errorWriter writes an error in the shape of the request's protocol:
// Connect (HTTP status and JSON body), gRPC and gRPC-Web (grpc-status in
// trailers). A request of no known protocol gets the Connect unary shape.
var errorWriter = connect.NewErrorWriter()

// requireBearer admits only requests bearing one of tokens, deciding from
// the headers alone: a refused request's body is never read, let alone
// decompressed or parsed, so without a token no request costs more than
// its headers. An admitted request's body is capped at requestBodyLimit.
func requireBearer(tokens tokenSet, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !tokens.contains(bearer(r.Header.Get("Authorization"))) {
			// Tell HTTP/1.1 the body will not be read, so it closes the
			// connection instead of draining the body to reuse it.
			if r.ProtoMajor == 1 {
				w.Header().Set("Connection", "close")
			}
			_ = errorWriter.Write(w, r, connect.NewError(connect.CodeUnauthenticated, errUnauthenticated))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, requestBodyLimit)
		next.ServeHTTP(w, r)
	})
}
