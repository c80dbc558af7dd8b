package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/derrors"
	"github.com/irisx-broker/irisx-broker/store"
)

// Sentinel errors of APIKeyTokens, besides ErrUnavailable and
// ErrInvalidScope.
var (
	// ErrAPIKeyNotFound means no API key is registered under the name.
	ErrAPIKeyNotFound = fmt.Errorf("token: API key %w", derrors.ErrNotFound)
	// ErrAPIKeyRejected means Trackunit rejected the key's credentials; no
	// upstream call is made until they are replaced. It wraps
	// ErrCredentialsRejected.
	ErrAPIKeyRejected = fmt.Errorf("%w: API key", ErrCredentialsRejected)
)

// APIKeyStore is what APIKeyTokens needs from persistence; *store.Store
// satisfies it (and SharedStore, so the fleet mints once).
type APIKeyStore interface {
	APIKeyCredentials(ctx context.Context, name string) (store.APIKeyCredentials, error)
	MarkAPIKeyRejected(ctx context.Context, name string, version int64, lastError string) error
	RecordAPIKeyResult(ctx context.Context, name, lastError string) error
}

// APIKeyTokens hands out tokens for registered Trackunit API keys (POST
// /token/v2, client credentials, 1200 s tokens, no refresh token): the core
// with the API key kind. It is safe for concurrent use.
type APIKeyTokens struct {
	b  *Broker
	st APIKeyStore
	// scopes remembers each key's allowed scopes, the default of a request
	// that names none; forgotten on Invalidate.
	scopes sync.Map // name -> []string
}

// apiKeyApp is the app part of an API key's cache key: no IrisX app id
// starts with a control character, so no install key collides with it.
const apiKeyApp = store.APIKeyNotifyApp

// NewAPIKeys builds the API key broker. cfg.DefaultScopes is unused: a key's
// default is all of its scopes.
func NewAPIKeys(cfg Config, st APIKeyStore) (*APIKeyTokens, error) {
	if st == nil {
		return nil, errors.New("token: nil API key store")
	}
	cfg.DefaultScopes = nil
	b, err := newCore(cfg, noInstalls{}, "/token/v2")
	if err != nil {
		return nil, err
	}
	b.setClientCredentials(apiKeyKind{b: b, st: st}, st)
	return &APIKeyTokens{b: b, st: st}, nil
}

// Token returns an access token for the API key with the scopes asked for
// (default: all of the key's), which must be among the key's: a scope
// outside them is ErrInvalidScope without an upstream call.
func (t *APIKeyTokens) Token(ctx context.Context, name string, scopes []string, minValid time.Duration) (Token, error) {
	if !store.ValidAPIUserName(name) {
		return Token{}, ErrAPIKeyNotFound
	}
	norm, err := normalizeScopes(scopes)
	if err != nil {
		return Token{}, err
	}
	if len(norm) == 0 {
		if norm, err = t.keyScopes(ctx, name); err != nil {
			return Token{}, err
		}
	}
	norm = slices.Clone(norm)
	key := string(appendKey(nil, apiKeyApp, name, norm))
	f := fetchReq{key: key, install: apiKeyApp + "\x00" + name, app: apiKeyApp, account: name,
		scopes: norm, need: max(minValid, minServeLeft)}
	return t.b.serve(ctx, f, t.b.now())
}

// Invalidate drops the key's cached tokens and restarts its fetches; the
// API calls it after replacing or deleting the key.
func (t *APIKeyTokens) Invalidate(name string) {
	t.scopes.Delete(name)
	t.b.cache.invalidate(apiKeyApp + "\x00" + name)
}

// InvalidateAll drops every cached API key token.
func (t *APIKeyTokens) InvalidateAll() {
	t.scopes.Clear()
	t.b.cache.invalidateAll()
}

// keyScopes returns the key's allowed scopes, sorted.
func (t *APIKeyTokens) keyScopes(ctx context.Context, name string) ([]string, error) {
	if v, ok := t.scopes.Load(name); ok {
		return v.([]string), nil
	}
	c, err := t.b.kind.(apiKeyKind).read(ctx, name)
	if err != nil {
		return nil, err
	}
	scopes := slices.Sorted(slices.Values(c.Scopes))
	t.scopes.Store(name, scopes)
	return scopes, nil
}

// apiKeyKind is the API key credential kind.
type apiKeyKind struct {
	b  *Broker
	st APIKeyStore
}

func (apiKeyKind) name() string     { return store.TokenKindAPIKey }
func (apiKeyKind) label() string    { return "API key" }
func (apiKeyKind) endpoint() string { return "token_v2" }
func (apiKeyKind) rejected() error  { return ErrAPIKeyRejected }

func (apiKeyKind) attrs(f fetchReq) []slog.Attr {
	return []slog.Attr{slog.String("api_key", f.account)}
}

func (apiKeyKind) sharedKey(f fetchReq) store.TokenKey {
	return store.TokenKey{Kind: store.TokenKindAPIKey, Credential: f.account, Scopes: joinScopes(f.scopes)}
}

// load reads the key and checks the scopes: an empty request becomes the
// key's scopes (the fetch's scopes are fixed by then, so the cache key of
// an empty request stays "all of the key's scopes").
func (k apiKeyKind) load(ctx context.Context, f fetchReq) (store.Credentials, error) {
	c, err := k.read(ctx, f.account)
	if err != nil {
		return store.Credentials{}, err
	}
	for _, s := range f.scopes {
		if !slices.Contains(c.Scopes, s) {
			return store.Credentials{}, fmt.Errorf("%w: scope %q is not one of the API key's", ErrInvalidScope, truncate(s, 64))
		}
	}
	return c.Credentials, requireClientSecrets(c.Credentials)
}

// read loads the key, classifying its errors.
func (k apiKeyKind) read(ctx context.Context, name string) (store.APIKeyCredentials, error) {
	c, err := k.st.APIKeyCredentials(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return c, fmt.Errorf("%w: %w", ErrAPIKeyNotFound, err)
	}
	if err != nil {
		k.b.log.LogAttrs(ctx, slog.LevelError, "loading API key failed", slog.String("api_key", name), slog.Any("error", err))
		return c, fmt.Errorf("%w: loading API key: %w", ErrUnavailable, err)
	}
	if c.Status == store.StatusCredentialsRejected {
		return c, ErrAPIKeyRejected
	}
	return c, nil
}

func (k apiKeyKind) current(ctx context.Context, f fetchReq, e *entry) (bool, error) {
	c, err := k.read(ctx, f.account)
	if err != nil {
		return false, err
	}
	return c.Version == e.version, nil
}

func (k apiKeyKind) markRejected(ctx context.Context, f fetchReq, version int64, code string) error {
	return k.st.MarkAPIKeyRejected(ctx, f.account, version, code)
}

// record writes the outcome at once: it happens once per mint, not per
// request.
func (k apiKeyKind) record(ctx context.Context, f fetchReq, lastError string) {
	if err := k.st.RecordAPIKeyResult(context.WithoutCancel(ctx), f.account, lastError); err != nil {
		k.b.log.LogAttrs(ctx, slog.LevelWarn, "recording the API key result failed", slog.String("api_key", f.account), slog.Any("error", err))
	}
}
