package store

import "time"

// TokenResult is the outcome of one upstream token call for an install,
// recorded asynchronously as the install's lastTokenAt / lastError.
type TokenResult struct {
	IrisAppID string
	AccountID string
	At        time.Time
	// LastError is empty on success, else a short code such as
	// "unavailable" or "invalid_client"; never upstream body text.
	LastError string
}
