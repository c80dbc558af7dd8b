package store

import (
	"errors"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// Sentinel errors callers classify with errors.Is.
var (
	// ErrNotFound means the row asked for does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrUndecryptable means a stored ciphertext failed to open: tampered,
	// moved to another row or column, or sealed under a key not in the
	// keyring. It is never turned into wrong credentials.
	ErrUndecryptable = errors.New("store: stored secret cannot be decrypted")
	// ErrInvalid means an argument can never be stored: an account id that
	// is not a UUID, an empty or over-long app id, an INSTALLED without
	// credentials, an unknown status filter.
	ErrInvalid = errors.New("store: invalid argument")
)

// InstallStatus is the lifecycle state of one (irisAppId, accountId) install.
type InstallStatus string

// The install statuses of the contract.
const (
	StatusInstalled           InstallStatus = "installed"
	StatusUninstalled         InstallStatus = "uninstalled"
	StatusCredentialsRejected InstallStatus = "credentials_rejected"
)

// Credentials are one install's decrypted OAuth client credentials.
type Credentials struct {
	IrisAppID    string
	AccountID    string
	Status       InstallStatus
	ClientID     crypto.Secret
	ClientSecret crypto.Secret
	// Version increases every time the credentials change, so a rejection
	// observed with old credentials cannot mark newer ones as rejected.
	Version int64
}
