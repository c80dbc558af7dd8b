package crypto

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sentinel errors of Open, for errors.Is.
var (
	// ErrUnknownKey means the ciphertext names a key id the keyring lacks.
	ErrUnknownKey = errors.New("crypto: unknown key id")
	// ErrDecrypt means authentication failed: the ciphertext was altered,
	// truncated, relabelled with another key id, or moved to another
	// location.
	ErrDecrypt = errors.New("crypto: ciphertext does not authenticate")
)

const nonceSize = 12

// aadVersion starts every associated-data string so a future encoding can
// never be confused with this one.
const aadVersion = "irisx-aad-v1"

// Location names where a ciphertext is stored. It becomes part of the
// associated data, so a ciphertext opens only at the location it was sealed
// for.
type Location struct {
	Table  string // e.g. "installs"
	Row    string // the row's key, e.g. irisAppID + "/" + accountID
	Column string // e.g. "client_secret"
}

// AAD encodes the associated data binding a ciphertext to its table, row,
// column and key id. Every part is length-prefixed, so no two different
// tuples share an encoding (("a/b","c") and ("a","b/c") differ).
func AAD(table, rowKey, column, keyID string) []byte {
	parts := [...]string{aadVersion, table, rowKey, column, keyID}
	n := 0
	for _, p := range parts {
		n += 4 + len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

// Seal encrypts plaintext with AES-256-GCM under the primary key, with a
// random 12-byte nonce, and binds it to loc and the key id. It returns the
// key id to store beside the ciphertext; the ciphertext is nonce||sealed.
// The key id is added to the associated data here, not by the caller, so a
// relabelled key id can never be forgotten.
func (k *Keyring) Seal(plaintext []byte, loc Location) (keyID string, ciphertext []byte, err error) {
	primary := k.keys[0]
	nonce := make([]byte, nonceSize, nonceSize+len(plaintext)+primary.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, fmt.Errorf("crypto: read nonce: %w", err)
	}
	aad := AAD(loc.Table, loc.Row, loc.Column, primary.id)
	return primary.id, primary.aead.Seal(nonce, nonce, plaintext, aad), nil
}

// Open decrypts a ciphertext made by Seal for loc under keyID. It returns
// ErrUnknownKey when the keyring lacks keyID and ErrDecrypt when the
// ciphertext does not authenticate; it never returns wrong plaintext.
func (k *Keyring) Open(keyID string, ciphertext []byte, loc Location) ([]byte, error) {
	aead := k.byID[keyID]
	if aead == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, keyID)
	}
	if len(ciphertext) < nonceSize+aead.Overhead() {
		return nil, fmt.Errorf("%w: too short", ErrDecrypt)
	}
	nonce, sealed := ciphertext[:nonceSize], ciphertext[nonceSize:]
	plain, err := aead.Open(nil, nonce, sealed, AAD(loc.Table, loc.Row, loc.Column, keyID))
	if err != nil {
		return nil, ErrDecrypt
	}
	return plain, nil
}
