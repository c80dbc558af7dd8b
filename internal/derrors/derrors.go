// Package derrors holds the few error classes every layer wraps: a store,
// token or events error says which class it is by wrapping one of these
// (fmt.Errorf("%w: ...", derrors.NotFound)), and the api package maps the
// class, and the specific sentinels it knows, to an HTTP status, a Connect
// code and a public message in one table.
package derrors

import "errors"

// The classes. A domain sentinel wraps exactly one of them.
var (
	// NotFound: the thing asked for does not exist.
	NotFound = errors.New("not found")
	// Invalid: the caller's input is malformed or out of range.
	Invalid = errors.New("invalid argument")
	// Rejected: the thing exists but its state refuses the request
	// (uninstalled, credentials rejected by Trackunit).
	Rejected = errors.New("failed precondition")
	// Unavailable: a dependency (the database, Trackunit, a KMS) failed;
	// retrying later may succeed.
	Unavailable = errors.New("unavailable")
	// Internal: our own fault or corrupt data (an undecryptable secret).
	Internal = errors.New("internal error")
)
