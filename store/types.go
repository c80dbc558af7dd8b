package store

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/derrors"
)

// Sentinel errors callers classify with errors.Is.
var (
	// ErrNotFound means the row asked for does not exist.
	ErrNotFound = fmt.Errorf("store: %w", derrors.ErrNotFound)
	// ErrUndecryptable means a stored ciphertext failed to open: tampered,
	// moved to another row or column, or sealed under a key not in the
	// keyring. It is never turned into wrong credentials.
	ErrUndecryptable = fmt.Errorf("%w: store: stored secret cannot be decrypted", derrors.ErrInternal)
	// ErrInvalid means an argument can never be stored: an account id that
	// is not a UUID, an empty or over-long app id, an INSTALLED without
	// credentials, an unknown status filter.
	ErrInvalid = fmt.Errorf("store: %w", derrors.ErrInvalid)
	// ErrDatabase is wrapped by every failure of the database itself
	// (unreachable, timed out, refused a statement).
	ErrDatabase = fmt.Errorf("%w: the database failed", derrors.ErrUnavailable)
)

// IsDatabaseFailure reports whether err is a failure of the database
// itself (unreachable, a lost connection, a closed pool, an error the
// server reported) rather than one of the store's sentinels, so callers
// can say the database failed.
func IsDatabaseFailure(err error) bool {
	var (
		pgErr      *pgconn.PgError
		connectErr *pgconn.ConnectError
	)
	return errors.As(err, &pgErr) || errors.As(err, &connectErr) || errors.Is(err, puddle.ErrClosedPool) ||
		pgconn.Timeout(err) || pgconn.SafeToRetry(err) || isNetOrEOF(err)
}

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
