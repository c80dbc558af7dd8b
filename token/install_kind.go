package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/store"
)

// InstallTokens is the broker of IrisX install tokens (POST /apptoken with
// each install's client credentials): the core with the install kind.
type InstallTokens = Broker

// installKind is the install credential kind.
type installKind struct {
	b  *Broker
	st Store
}

func (installKind) name() string     { return store.TokenKindInstall }
func (installKind) label() string    { return "install" }
func (installKind) endpoint() string { return "apptoken" }
func (installKind) rejected() error  { return ErrCredentialsRejected }

func (installKind) attrs(f fetchReq) []slog.Attr {
	return []slog.Attr{slog.String("iris_app_id", f.app), slog.String("account_id", f.account)}
}

func (installKind) sharedKey(f fetchReq) store.TokenKey {
	return store.TokenKey{Kind: store.TokenKindInstall, Credential: store.InstallCredential(f.app, f.account), Scopes: joinScopes(f.scopes)}
}

func (k installKind) load(ctx context.Context, f fetchReq) (store.Credentials, error) {
	creds, err := k.st.InstallCredentials(ctx, f.app, f.account)
	if errors.Is(err, store.ErrNotFound) {
		return creds, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err != nil {
		k.b.log.LogAttrs(ctx, slog.LevelError, "loading install credentials failed",
			slog.String("iris_app_id", f.app), slog.String("account_id", f.account), slog.Any("error", err))
		return creds, fmt.Errorf("%w: loading install credentials: %w", ErrUnavailable, err)
	}
	if err := installStatusError(creds.Status); err != nil {
		return creds, err
	}
	return creds, requireClientSecrets(creds)
}

func installStatusError(st store.InstallStatus) error {
	switch st {
	case store.StatusInstalled:
		return nil
	case store.StatusUninstalled:
		return ErrUninstalled
	case store.StatusCredentialsRejected:
		return ErrCredentialsRejected
	default:
		return fmt.Errorf("%w: install has unknown status %q", ErrUnavailable, truncate(string(st), 32))
	}
}

// InstallVersioner is the optional part of Store the deaf-replica check
// reads; *store.Store has it.
type InstallVersioner interface {
	InstallVersion(ctx context.Context, irisAppID, accountID string) (store.InstallStatus, int64, error)
}

func (k installKind) current(ctx context.Context, f fetchReq, e *entry) (bool, error) {
	v, ok := k.st.(InstallVersioner)
	if !ok {
		return true, nil
	}
	st, cur, err := v.InstallVersion(ctx, f.app, f.account)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, fmt.Errorf("%w: %w", ErrNotFound, err)
	case err != nil:
		return false, fmt.Errorf("%w: checking the install: %w", ErrUnavailable, err)
	}
	if err := installStatusError(st); err != nil {
		return false, err
	}
	return cur == e.version, nil
}

func (k installKind) markRejected(ctx context.Context, f fetchReq, version int64, code string) error {
	return k.st.MarkCredentialsRejected(ctx, f.app, f.account, version, code)
}

func (k installKind) record(_ context.Context, f fetchReq, lastError string) {
	k.b.record(f, lastError)
}

// ForgetStore erases a refused shared token; *store.Store has it.
type ForgetStore interface {
	ForgetSharedToken(ctx context.Context, k store.TokenKey, rejected crypto.Secret) error
}

// Forget is for a caller whose IRIS API call was refused (401) with
// rejected: this replica drops the install's cached tokens and, fleet-wide,
// the stored token of the scope set if it is still rejected, so the next
// Token mints a new one while a token minted meanwhile by another replica
// is kept. scopes are as for Token (none means the defaults).
func (b *Broker) Forget(ctx context.Context, irisAppID, accountID string, scopes []string, rejected crypto.Secret) error {
	b.Invalidate(irisAppID, accountID)
	fs, ok := b.st.(ForgetStore)
	if !ok {
		return nil
	}
	norm, err := normalizeScopes(scopes)
	if err != nil {
		return err
	}
	if len(norm) == 0 {
		norm = b.defaultScopes
	}
	f := fetchReq{app: irisAppID, account: accountID, scopes: norm}
	return fs.ForgetSharedToken(ctx, installKind{}.sharedKey(f), rejected)
}
