package token

import (
	"context"
	"log/slog"

	"github.com/irisx-broker/irisx-broker/store"
)

// credKind is what a credential kind adds to the core: where its
// credentials come from, what it is called, how a cached token is checked.
// How it mints and where the fleet shares its tokens are its leases.
type credKind interface {
	name() string     // metrics label and shared-token kind
	label() string    // for log messages: "install", "API key"
	endpoint() string // metrics label of the token endpoint
	attrs(f fetchReq) []slog.Attr
	// load reads and checks the credentials; errors are classified.
	load(ctx context.Context, f fetchReq) (store.Credentials, error)
	// current reports whether e may still be served: its credential is
	// still usable at the version it was minted with (the deaf-replica
	// and revalidation check).
	current(ctx context.Context, f fetchReq, e *entry) (bool, error)
}

// clientCredentials is a kind that mints with the client-credentials grant
// (Broker.call) and shares its tokens in shared_tokens: installs and API
// keys.
type clientCredentials interface {
	credKind
	// sharedKey names the fetch's row in the shared token table.
	sharedKey(f fetchReq) store.TokenKey
	markRejected(ctx context.Context, f fetchReq, version int64, code string) error
	record(ctx context.Context, f fetchReq, lastError string)
	rejected() error // the kind's credentials-rejected sentinel
}

// noInstalls satisfies Store for a kind that records nothing in the
// installs table (API keys, API users).
type noInstalls struct{}

func (noInstalls) InstallCredentials(context.Context, string, string) (store.Credentials, error) {
	return store.Credentials{}, store.ErrNotFound
}
func (noInstalls) MarkCredentialsRejected(context.Context, string, string, int64, string) error {
	return nil
}
func (noInstalls) RecordTokenResults(context.Context, []store.TokenResult) error { return nil }
