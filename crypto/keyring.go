package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// KeySize is the length in bytes of every key in a keyring (AES-256).
const KeySize = 32

// maxIDLen bounds a key id. It is short on purpose: a base64 key is 43 or 44
// characters, so text that long is never echoed back as an "id" in an error
// message when an entry was written the wrong way round.
const maxIDLen = 32

// ErrInvalidKeyring is wrapped by every ParseKeyring and GenerateKey error.
var ErrInvalidKeyring = errors.New("crypto: invalid keyring")

type keyEntry struct {
	id       string
	aead     cipher.AEAD
	material []byte // for Derive only
}

// Keyring holds the encryption keys by id. The first key is the primary: it
// seals every new ciphertext; all keys open. A Keyring is immutable and safe
// for concurrent use. It never prints its key material.
type Keyring struct {
	keys []keyEntry // keys[0] is the primary
	byID map[string]cipher.AEAD
}

// ParseKeyring parses "id:base64key,id2:base64key2" (the ENCRYPTION_KEYS
// format). Each key is 32 bytes in standard base64 (padding optional); space
// around entries is ignored so a key file may end in a newline. Every bad
// entry is reported at once, by position and id, and no error ever contains
// key material.
func ParseKeyring(spec string) (*Keyring, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, fmt.Errorf("%w: no keys given", ErrInvalidKeyring)
	}
	k := &Keyring{byID: make(map[string]cipher.AEAD)}
	var problems []string
	firstByID := make(map[string]int)
	var materials [][]byte
	var materialPos []string
	for i, entry := range strings.Split(spec, ",") {
		pos := fmt.Sprintf("entry %d", i+1)
		entry = strings.TrimSpace(entry)
		if entry == "" {
			problems = append(problems, pos+": empty")
			continue
		}
		// Split at the last ':' because standard base64 never contains one,
		// so an id that wrongly contains ':' is reported as a bad id rather
		// than as bad base64.
		sep := strings.LastIndexByte(entry, ':')
		if sep < 0 {
			problems = append(problems, pos+": missing ':' between key id and key")
			continue
		}
		id, encoded := entry[:sep], entry[sep+1:]
		if err := validateID(id); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", pos, err))
			id = "" // do not echo it or use it for duplicate checks
		} else {
			pos = fmt.Sprintf("%s (id %q)", pos, id)
			if prev, dup := firstByID[id]; dup {
				problems = append(problems, fmt.Sprintf("%s: duplicate key id, first used by entry %d", pos, prev))
			} else {
				firstByID[id] = i + 1
			}
		}
		key, err := decodeKey(encoded)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", pos, err))
			continue
		}
		dupOf := ""
		for j, m := range materials {
			if subtle.ConstantTimeCompare(m, key) == 1 {
				dupOf = materialPos[j]
				break
			}
		}
		if dupOf != "" {
			// Two ids for one key would let a ciphertext be relabelled
			// without detection by the key itself.
			problems = append(problems, fmt.Sprintf("%s: same key as %s", pos, dupOf))
			continue
		}
		materials = append(materials, key)
		materialPos = append(materialPos, pos)
		if id == "" || k.byID[id] != nil {
			continue
		}
		aead, err := newAEAD(key)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", pos, err))
			continue
		}
		k.keys = append(k.keys, keyEntry{id: id, aead: aead, material: key})
		k.byID[id] = aead
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalidKeyring, strings.Join(problems, "; "))
	}
	return k, nil
}

// validateID allows only characters that are safe in logs, metrics labels
// and the ENCRYPTION_KEYS syntax itself.
func validateID(id string) error {
	if id == "" {
		return errors.New("empty key id")
	}
	if len(id) > maxIDLen {
		return fmt.Errorf("key id longer than %d characters", maxIDLen)
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		case r == ':' || r == ',':
			return fmt.Errorf("key id contains %q", r)
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			return errors.New("key id contains white space")
		default:
			return errors.New("key id may only contain letters, digits, '-', '_' and '.'")
		}
	}
	return nil
}

// decodeKey decodes a key; its errors never quote the input.
func decodeKey(encoded string) ([]byte, error) {
	if encoded == "" {
		return nil, errors.New("empty key")
	}
	enc := base64.StdEncoding
	if !strings.HasSuffix(encoded, "=") {
		enc = base64.RawStdEncoding
	}
	key, err := enc.DecodeString(encoded)
	if err != nil {
		return nil, errors.New("key is not valid standard base64")
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("key is %d bytes, want %d", len(key), KeySize)
	}
	return key, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, errors.New("cannot create AES cipher")
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, errors.New("cannot create AES-GCM")
	}
	return aead, nil
}

// GenerateKey returns a new keyring entry "id:base64key" holding 32 random
// bytes, ready to be put first in ENCRYPTION_KEYS.
func GenerateKey(id string) (entry string, err error) {
	if err := validateID(id); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidKeyring, err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("crypto: read random key: %w", err)
	}
	return id + ":" + base64.StdEncoding.EncodeToString(key), nil
}

// Derive returns a 32-byte key for one purpose, named by label, derived
// from the primary key with HKDF-SHA256. Different labels give independent
// keys, none of which reveals the primary key; every replica with the same
// primary derives the same key. A key rotation changes it.
func (k *Keyring) Derive(label string) []byte {
	out, err := hkdf.Key(sha256.New, k.keys[0].material, nil, "irisx-broker/"+label, KeySize)
	if err != nil {
		panic("crypto: HKDF: " + err.Error()) // only for lengths HKDF-SHA256 cannot give
	}
	return out
}

// PrimaryID returns the id of the key that seals new ciphertexts.
func (k Keyring) PrimaryID() string { return k.keys[0].id }

// IDs returns every key id, the primary first.
func (k Keyring) IDs() []string {
	ids := make([]string, len(k.keys))
	for i, e := range k.keys {
		ids[i] = e.id
	}
	return ids
}

// Has reports whether the keyring holds a key with this id.
func (k *Keyring) Has(id string) bool { return k.byID[id] != nil }

// String lists the key ids only, so printing a Keyring cannot leak keys.
func (k Keyring) String() string {
	return "crypto.Keyring{" + strings.Join(k.IDs(), ",") + "}"
}

// GoString is String, for %#v.
func (k Keyring) GoString() string { return k.String() }

// Format prints String for every verb; without it fmt would walk the
// unexported fields and print the expanded AES key schedule. The value
// receivers cover both Keyring and *Keyring.
func (k Keyring) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// LogValue logs the key ids only.
func (k Keyring) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("primary", k.PrimaryID()),
		slog.Any("ids", k.IDs()),
	)
}
