package testkit

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// KeySpec is an ENCRYPTION_KEYS value holding one key, k1, for tests that
// need a keyring but not a particular one.
const KeySpec = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// Key returns a distinct valid key for each seed, in the base64 form a
// keyring spec takes ("k2:" + Key(2)).
func Key(seed byte) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('a'+seed)), crypto.KeySize)))
}

// Keyring parses spec (the ENCRYPTION_KEYS format), failing the test if it
// is not valid.
func Keyring(t testing.TB, spec string) *crypto.Keyring {
	t.Helper()
	k, err := crypto.ParseKeyring(spec)
	if err != nil {
		t.Fatalf("parse the test keyring: %v", err)
	}
	return k
}
