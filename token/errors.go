package token

import (
	"fmt"

	"github.com/irisx-broker/irisx-broker/internal/derrors"
)

// Sentinel errors; classify with errors.Is. Every error Token returns wraps
// one of them or the caller's own context error.
var (
	// ErrNotFound means no install exists for the (app, account) asked for.
	ErrNotFound = fmt.Errorf("token: install %w", derrors.ErrNotFound)
	// ErrUninstalled means the app was uninstalled from the account.
	ErrUninstalled = fmt.Errorf("%w: token: app is uninstalled for this account", derrors.ErrRejected)
	// ErrCredentialsRejected means Trackunit rejected the install's client
	// credentials; no upstream call is made until a new INSTALLED arrives.
	ErrCredentialsRejected = fmt.Errorf("%w: token: install credentials rejected", derrors.ErrRejected)
	// ErrInvalidScope means a requested scope is malformed or was refused
	// upstream (not granted to the app or the install).
	ErrInvalidScope = fmt.Errorf("%w: token: invalid scope", derrors.ErrInvalid)
	// ErrNoScopes means the request named no scopes and no default is set.
	ErrNoScopes = fmt.Errorf("%w: token: no scopes requested and no default scopes configured", derrors.ErrInvalid)
	// ErrUnavailable means no token could be minted now: the token endpoint
	// or the store failed, even after retries where retrying makes sense.
	ErrUnavailable = fmt.Errorf("%w: token: token endpoint unavailable", derrors.ErrUnavailable)
)
