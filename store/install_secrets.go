package store

import (
	"fmt"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// seal encrypts both credentials for the install's row.
func (s *Store) seal(k InstallKey, clientID, clientSecret crypto.Secret) (*sealed, error) {
	keyID, idEnc, err := s.keys.Seal([]byte(clientID.Reveal()), k.location(columnClientID))
	if err != nil {
		return nil, fmt.Errorf("store: seal client id: %w", err)
	}
	_, secretEnc, err := s.keys.Seal([]byte(clientSecret.Reveal()), k.location(columnClientSecret))
	if err != nil {
		return nil, fmt.Errorf("store: seal client secret: %w", err)
	}
	return &sealed{clientID: clientID, clientSecret: clientSecret, keyID: keyID, clientIDEnc: idEnc, secretEnc: secretEnc}, nil
}

// open decrypts both credentials of an install row. Failures wrap
// ErrUndecryptable and the crypto sentinel; they never carry plaintext.
func (s *Store) open(k InstallKey, keyID string, idEnc, secretEnc []byte) (crypto.Secret, crypto.Secret, error) {
	id, err := s.keys.Open(keyID, idEnc, k.location(columnClientID))
	if err != nil {
		return "", "", fmt.Errorf("%w: client_id of %s/%s: %w", ErrUndecryptable, k.IrisAppID, k.AccountID, err)
	}
	secret, err := s.keys.Open(keyID, secretEnc, k.location(columnClientSecret))
	if err != nil {
		return "", "", fmt.Errorf("%w: client_secret of %s/%s: %w", ErrUndecryptable, k.IrisAppID, k.AccountID, err)
	}
	return crypto.Secret(id), crypto.Secret(secret), nil
}
