// Package derrors holds the few error classes every layer wraps: a store,
// token or events error says which class it is by wrapping one of these
// (fmt.Errorf("%w: ...", derrors.ErrNotFound)), and the api package maps the
// class, and the specific sentinels it knows, to an HTTP status, a Connect
// code and a public message in one table.
package derrors

import "errors"

// The classes. A domain sentinel wraps exactly one of them.
var (
	// ErrNotFound: the thing asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the caller's input is malformed or out of range.
	ErrInvalid = errors.New("invalid argument")
	// ErrRejected: the thing exists but its state refuses the request
	// (uninstalled, credentials rejected by Trackunit).
	ErrRejected = errors.New("failed precondition")
	// ErrUnavailable: a dependency (the database, Trackunit, a KMS) failed;
	// retrying later may succeed.
	ErrUnavailable = errors.New("unavailable")
	// ErrInternal: our own fault or corrupt data (an undecryptable secret).
	ErrInternal = errors.New("internal error")
)
