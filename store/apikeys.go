package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// ErrAPIKeyNotFound means no API key has the name asked for. It wraps
// ErrNotFound.
var ErrAPIKeyNotFound = fmt.Errorf("%w: no such API key", ErrNotFound)

const apiKeysTable = "api_keys"

// APIKeyNotifyApp is the irisAppId of a ChannelInstallChanged payload that
// announces a change of the API key named by its accountId: replaced,
// deleted or rejected. No IrisX app id starts with a control character.
const APIKeyNotifyApp = "\x01api-key"

func apiKeyNotifyPayload(name string) string {
	return InstallKey{IrisAppID: APIKeyNotifyApp, AccountID: name}.notifyPayload()
}

// API key statuses are those of API users: APIUserActive and
// APIUserCredentialsRejected.

// NewAPIKey is the registration of a Trackunit API key.
type NewAPIKey struct {
	Name         string // the name callers ask for tokens by
	ClientID     crypto.Secret
	ClientSecret crypto.Secret
	// Scopes a token may be asked for, at least one. Duplicates are dropped.
	Scopes []string
}

// normalized validates k; the error is a *ValidationError naming fields,
// never their values.
func (k NewAPIKey) normalized() (NewAPIKey, error) {
	var problems []string
	if !ValidAPIUserName(k.Name) {
		problems = append(problems, "name must be 1 to 128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
	}
	problems = append(problems, secretProblems(namedSecret{"clientId", k.ClientID}, namedSecret{"clientSecret", k.ClientSecret})...)
	scopes, scopeProblems := uniqueScopes(k.Scopes)
	if len(scopes) == 0 && len(scopeProblems) == 0 {
		scopeProblems = append(scopeProblems, "scopes: at least one is required")
	}
	problems = append(problems, scopeProblems...)
	if len(problems) > 0 {
		return NewAPIKey{}, &ValidationError{Message: strings.Join(problems, "; ")}
	}
	slices.Sort(scopes)
	k.Scopes = scopes
	return k, nil
}

// Validate reports every problem of k at once as a *ValidationError, or nil.
func (k NewAPIKey) Validate() error {
	_, err := k.normalized()
	return err
}

// APIKey is an API key as operators see it. It never holds a secret.
type APIKey struct {
	Name         string        `db:"name"`
	ClientIDHint string        `db:"client_id_hint"`
	Scopes       []string      `db:"scopes"`
	Status       APIUserStatus `db:"status"`
	CreatedAt    time.Time     `db:"created_at"`
	LastTokenAt  *time.Time    `db:"last_token_at"`
	LastError    string        `db:"last_error"`
}

const apiKeyColumns = `name, client_id_hint, scopes, status, created_at, last_token_at,
	coalesce(last_error, '') AS last_error`

func apiKeyLocation(name, column string) crypto.Location {
	return crypto.Location{Table: apiKeysTable, Row: name, Column: column}
}

// clientIDHint is at most the last 4 characters of a client id.
func clientIDHint(id string) string {
	r := []rune(id)
	if len(r) > 4 {
		r = r[len(r)-4:]
	}
	return string(r)
}

// CreateAPIKey registers an API key, or replaces the credentials and scopes
// of the one with the same name: status active, credentials version bumped,
// and, in the same transaction, its shared tokens erased (they belong to the
// old credentials). A *ValidationError when k can never be stored.
func (s *Store) CreateAPIKey(ctx context.Context, k NewAPIKey) (APIKey, error) {
	k, err := k.normalized()
	if err != nil {
		return APIKey{}, err
	}
	keyID, idEnc, err := s.keys.Seal([]byte(k.ClientID.Reveal()), apiKeyLocation(k.Name, columnClientID))
	if err != nil {
		return APIKey{}, fmt.Errorf("store: seal client id: %w", err)
	}
	_, secretEnc, err := s.keys.Seal([]byte(k.ClientSecret.Reveal()), apiKeyLocation(k.Name, columnClientSecret))
	if err != nil {
		return APIKey{}, fmt.Errorf("store: seal client secret: %w", err)
	}
	now := s.nowUTC()
	var out APIKey
	err = s.retry(ctx, func() error {
		return s.inTx(ctx, func(tx pgx.Tx) error {
			rows, _ := tx.Query(ctx, `INSERT INTO api_keys AS k (name, scopes, status, key_id, client_id_enc,
					client_secret_enc, client_id_hint, credentials_version, created_at, updated_at)
				VALUES ($1, $2, '`+string(APIUserActive)+`', $3, $4, $5, $6, 1, $7, $7)
				ON CONFLICT (name) DO UPDATE SET
					scopes = EXCLUDED.scopes, status = '`+string(APIUserActive)+`', key_id = EXCLUDED.key_id,
					client_id_enc = EXCLUDED.client_id_enc, client_secret_enc = EXCLUDED.client_secret_enc,
					client_id_hint = EXCLUDED.client_id_hint, credentials_version = k.credentials_version + 1,
					updated_at = EXCLUDED.updated_at, last_error = NULL
				RETURNING `+apiKeyColumns,
				k.Name, k.Scopes, keyID, idEnc, secretEnc, clientIDHint(k.ClientID.Reveal()), now)
			var err error
			if out, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[APIKey]); err != nil {
				return err
			}
			if _, err = tx.Exec(ctx, deleteSharedTokensSQL, TokenKindAPIKey, k.Name); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, notifySQL, ChannelInstallChanged, apiKeyNotifyPayload(k.Name))
			return err
		})
	})
	if err != nil {
		return APIKey{}, fmt.Errorf("%w: create API key: %w", ErrDatabase, err)
	}
	return out, nil
}

// ListAPIKeys returns every API key, ordered by name.
func (s *Store) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	var keys []APIKey
	err := s.retry(ctx, func() error {
		rows, _ := s.pool.Query(ctx, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY name`)
		var err error
		keys, err = pgx.CollectRows(rows, pgx.RowToStructByName[APIKey])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: list API keys: %w", ErrDatabase, err)
	}
	return keys, nil
}

// DeleteAPIKey removes an API key with its secrets and, in the same
// transaction, its shared tokens. ErrAPIKeyNotFound when there is none.
func (s *Store) DeleteAPIKey(ctx context.Context, name string) error {
	if !ValidAPIUserName(name) {
		return ErrAPIKeyNotFound
	}
	var n int64
	// Not retried: after a lost reply, a repeat would report a deletion
	// that succeeded as not found.
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM api_keys WHERE name = $1`, name)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		if _, err = tx.Exec(ctx, deleteSharedTokensSQL, TokenKindAPIKey, name); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, notifySQL, ChannelInstallChanged, apiKeyNotifyPayload(name))
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: delete API key: %w", ErrDatabase, err)
	}
	if n == 0 {
		return ErrAPIKeyNotFound
	}
	return nil
}

// APIKeyCredentials are an API key's decrypted credentials and allowed
// scopes. Status is StatusInstalled for an active key (so the token core
// treats every kind alike) or StatusCredentialsRejected.
type APIKeyCredentials struct {
	Credentials
	Scopes []string
}

// APIKeyCredentials reads and decrypts an API key. ErrAPIKeyNotFound when
// there is none.
func (s *Store) APIKeyCredentials(ctx context.Context, name string) (APIKeyCredentials, error) {
	if !ValidAPIUserName(name) {
		return APIKeyCredentials{}, ErrAPIKeyNotFound
	}
	var (
		c                APIKeyCredentials
		status           APIUserStatus
		keyID            string
		idEnc, secretEnc []byte
	)
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT scopes, status, key_id, client_id_enc, client_secret_enc, credentials_version
			FROM api_keys WHERE name = $1`, name).Scan(&c.Scopes, &status, &keyID, &idEnc, &secretEnc, &c.Version)
	})
	if errNoRows(err) {
		return APIKeyCredentials{}, ErrAPIKeyNotFound
	}
	if err != nil {
		return APIKeyCredentials{}, fmt.Errorf("%w: read API key: %w", ErrDatabase, err)
	}
	c.Status = StatusInstalled
	if status == APIUserCredentialsRejected {
		c.Status = StatusCredentialsRejected
	}
	id, err := s.keys.Open(keyID, idEnc, apiKeyLocation(name, columnClientID))
	if err != nil {
		return APIKeyCredentials{}, fmt.Errorf("%w: client_id of API key %s: %w", ErrUndecryptable, name, err)
	}
	secret, err := s.keys.Open(keyID, secretEnc, apiKeyLocation(name, columnClientSecret))
	if err != nil {
		return APIKeyCredentials{}, fmt.Errorf("%w: client_secret of API key %s: %w", ErrUndecryptable, name, err)
	}
	c.ClientID, c.ClientSecret = crypto.Secret(id), crypto.Secret(secret)
	return c, nil
}

// MarkAPIKeyRejected sets the key credentials_rejected, if its credentials
// are still at version, and erases its shared tokens.
func (s *Store) MarkAPIKeyRejected(ctx context.Context, name string, version int64, lastError string) error {
	err := s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `WITH marked AS (
				UPDATE api_keys SET status = '`+string(APIUserCredentialsRejected)+`', last_error = $3, updated_at = $4
				WHERE name = $1 AND credentials_version = $2 AND status = '`+string(APIUserActive)+`'
				RETURNING name
			), dropped AS (
				DELETE FROM shared_tokens WHERE kind = $5 AND credential IN (SELECT name FROM marked)
			)
			SELECT pg_notify($6, $7) FROM marked`,
			name, version, clean(lastError, maxLastErrorLen), s.nowUTC(), TokenKindAPIKey,
			ChannelInstallChanged, apiKeyNotifyPayload(name))
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: mark API key rejected: %w", ErrDatabase, err)
	}
	return nil
}

// RecordAPIKeyResult records a mint's outcome: lastError empty sets
// last_token_at and clears last_error.
func (s *Store) RecordAPIKeyResult(ctx context.Context, name, lastError string) error {
	err := s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `UPDATE api_keys SET
				last_token_at = CASE WHEN $2 = '' THEN $3 ELSE last_token_at END,
				last_error = NULLIF($2, '')
			WHERE name = $1`, name, clean(lastError, maxLastErrorLen), s.nowUTC())
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: record API key result: %w", ErrDatabase, err)
	}
	return nil
}
