package token

import "errors"

// Sentinel errors; classify with errors.Is. Every error Token returns wraps
// one of them or the caller's own context error.
var (
	// ErrNotFound means no install exists for the (app, account) asked for.
	ErrNotFound = errors.New("token: install not found")
	// ErrUninstalled means the app was uninstalled from the account.
	ErrUninstalled = errors.New("token: app is uninstalled for this account")
	// ErrCredentialsRejected means Trackunit rejected the install's client
	// credentials; no upstream call is made until a new INSTALLED arrives.
	ErrCredentialsRejected = errors.New("token: install credentials rejected")
	// ErrInvalidScope means a requested scope is malformed or was refused
	// upstream (not granted to the app or the install).
	ErrInvalidScope = errors.New("token: invalid scope")
	// ErrNoScopes means the request named no scopes and no default is set.
	ErrNoScopes = errors.New("token: no scopes requested and no default scopes configured")
	// ErrUnavailable means no token could be minted now: the token endpoint
	// or the store failed, even after retries where retrying makes sense.
	ErrUnavailable = errors.New("token: token endpoint unavailable")
)
