package store

import (
	"context"
	csubtle "crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// Credential kinds of the shared token table.
const (
	TokenKindInstall = "install"
	TokenKindAPIKey  = "api_key"
)

const sharedTokensTable = "shared_tokens"

// TokenKey names one shared token: a credential of a kind and a scope set.
type TokenKey struct {
	Kind       string // TokenKindInstall or TokenKindAPIKey
	Credential string // "irisAppId/accountId" or the API key's name
	Scopes     string // sorted, de-duplicated, space-joined
}

func (k TokenKey) location() crypto.Location {
	return crypto.Location{Table: sharedTokensTable, Row: k.Kind + "/" + k.Credential + "/" + k.Scopes, Column: columnAccessToken}
}

// InstallCredential is the Credential of an install's TokenKey.
func InstallCredential(irisAppID, accountID string) string { return irisAppID + "/" + accountID }

// SharedToken is a token as every replica sees it.
type SharedToken struct {
	AccessToken crypto.Secret
	TokenType   string
	Scopes      []string
	ExpiresAt   time.Time
	// Version is the credentials' version it was minted with.
	Version int64
	// ObtainedAt is when it was stored (the store's clock); read only, zero
	// when unknown. With ExpiresAt it gives the token's whole lifetime.
	ObtainedAt time.Time
}

// LeaseState is what AcquireToken found.
type LeaseState int

// The outcomes of AcquireToken.
const (
	// TokenShared: a token of the version, valid long enough, is stored.
	TokenShared LeaseState = iota
	// LeaseTaken: the caller holds the lease and should mint, then
	// CommitToken or ReleaseToken.
	LeaseTaken
	// LeaseBusy: another replica holds the lease; poll again shortly.
	LeaseBusy
)

// AcquireToken is the first short step of a fleet-wide mint, one statement
// on a pooled connection that is returned before the caller calls
// Trackunit. When a token minted with credentials version and valid past
// now+need is stored, it is returned (TokenShared). Otherwise, when the
// lease is free or expired, owner takes it until leaseUntil (LeaseTaken);
// else another replica is minting (LeaseBusy). Times are the broker's
// clock.
func (s *Store) AcquireToken(ctx context.Context, k TokenKey, version int64, owner string, now time.Time, need time.Duration, leaseUntil time.Time) (SharedToken, LeaseState, error) {
	var (
		taken              bool
		tok                SharedToken
		keyID              *string
		enc                []byte
		typ                *string
		expires, obtained  *time.Time
		rowVersion, scopes = (*int64)(nil), []string(nil)
	)
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `WITH cur AS (
				SELECT credential_version, key_id, access_token_enc, token_type, token_scopes, expires_at, obtained_at
				FROM shared_tokens WHERE kind = $1 AND credential = $2 AND scopes = $3
			), taken AS (
				INSERT INTO shared_tokens (kind, credential, scopes, credential_version, lease_owner, lease_until)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (kind, credential, scopes) DO UPDATE
					SET lease_owner = EXCLUDED.lease_owner, lease_until = EXCLUDED.lease_until
					WHERE NOT (shared_tokens.credential_version = $4 AND coalesce(shared_tokens.expires_at > $7, false))
					AND (shared_tokens.lease_until IS NULL OR shared_tokens.lease_until <= $8)
				RETURNING 1
			)
			SELECT EXISTS (SELECT 1 FROM taken), c.credential_version, c.key_id, c.access_token_enc,
				c.token_type, c.token_scopes, c.expires_at, c.obtained_at
			FROM (SELECT 1) one LEFT JOIN cur c ON true`,
			k.Kind, k.Credential, k.Scopes, version, owner, pgTime(leaseUntil), pgTime(now.Add(need)), pgTime(now)).
			Scan(&taken, &rowVersion, &keyID, &enc, &typ, &scopes, &expires, &obtained)
	})
	if err != nil {
		return SharedToken{}, 0, fmt.Errorf("%w: acquire shared token: %w", ErrDatabase, err)
	}
	if taken {
		return SharedToken{}, LeaseTaken, nil
	}
	if enc == nil || rowVersion == nil || *rowVersion != version || !expires.After(now.Add(need)) {
		return SharedToken{}, LeaseBusy, nil
	}
	plain, err := s.keys.Open(*keyID, enc, k.location())
	if err != nil {
		return SharedToken{}, 0, fmt.Errorf("%w: shared %s token: %w", ErrUndecryptable, k.Kind, err)
	}
	tok = SharedToken{AccessToken: crypto.Secret(plain), TokenType: *typ, Scopes: scopes, ExpiresAt: *expires, Version: *rowVersion}
	if obtained != nil {
		tok.ObtainedAt = *obtained
	}
	return tok, TokenShared, nil
}

// CommitToken is the second short step: it stores tok, minted with the
// credentials at tok.Version, if owner still holds the lease, and releases
// it. It reports whether it stored the token; false means the lease expired
// and was taken over meanwhile (the token is still good to hand out).
func (s *Store) CommitToken(ctx context.Context, k TokenKey, owner string, tok SharedToken) (bool, error) {
	keyID, enc, err := s.keys.Seal([]byte(tok.AccessToken.Reveal()), k.location())
	if err != nil {
		return false, fmt.Errorf("store: seal shared token: %w", err)
	}
	scopes := slices.Clone(tok.Scopes)
	if scopes == nil {
		scopes = []string{}
	}
	var n int64
	err = s.retry(ctx, func() error {
		tag, err := s.pool.Exec(ctx, `UPDATE shared_tokens SET credential_version = $5, key_id = $6,
				access_token_enc = $7, token_type = $8, token_scopes = $9, expires_at = $10, obtained_at = $11,
				lease_owner = NULL, lease_until = NULL
			WHERE kind = $1 AND credential = $2 AND scopes = $3 AND lease_owner = $4`,
			k.Kind, k.Credential, k.Scopes, owner, tok.Version, keyID, enc, tok.TokenType, scopes,
			pgTime(tok.ExpiresAt), s.nowUTC())
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("%w: commit shared token: %w", ErrDatabase, err)
	}
	return n == 1, nil
}

// ReleaseToken gives the lease up after a failed mint, so the next caller
// need not wait for it to expire.
func (s *Store) ReleaseToken(ctx context.Context, k TokenKey, owner string) error {
	err := s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `UPDATE shared_tokens SET lease_owner = NULL, lease_until = NULL
			WHERE kind = $1 AND credential = $2 AND scopes = $3 AND lease_owner = $4`,
			k.Kind, k.Credential, k.Scopes, owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: release shared token lease: %w", ErrDatabase, err)
	}
	return nil
}

// deleteSharedTokensSQL erases every shared token of one credential; it is
// run in the transaction that replaces or erases the credential.
const deleteSharedTokensSQL = `DELETE FROM shared_tokens WHERE kind = $1 AND credential = $2`

// ForgetSharedToken erases the stored token of k when it is rejected, the
// token an IRIS API call was just refused with, so the next caller mints a
// new one. Compare-and-delete: a token another replica has already minted
// in its place is kept, so a burst of refused calls causes one mint, not
// one each.
func (s *Store) ForgetSharedToken(ctx context.Context, k TokenKey, rejected crypto.Secret) error {
	var (
		keyID *string
		enc   []byte
	)
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT key_id, access_token_enc FROM shared_tokens
			WHERE kind = $1 AND credential = $2 AND scopes = $3`, k.Kind, k.Credential, k.Scopes).Scan(&keyID, &enc)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: read shared token: %w", ErrDatabase, err)
	}
	if keyID == nil || enc == nil {
		return nil
	}
	plain, err := s.keys.Open(*keyID, enc, k.location())
	if err != nil {
		return fmt.Errorf("%w: shared %s token: %w", ErrUndecryptable, k.Kind, err)
	}
	if csubtle.ConstantTimeCompare(plain, []byte(rejected.Reveal())) != 1 {
		return nil
	}
	err = s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `UPDATE shared_tokens
			SET key_id = NULL, access_token_enc = NULL, token_type = NULL, token_scopes = NULL, expires_at = NULL, obtained_at = NULL
			WHERE kind = $1 AND credential = $2 AND scopes = $3 AND access_token_enc = $4`,
			k.Kind, k.Credential, k.Scopes, enc)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: forget shared token: %w", ErrDatabase, err)
	}
	return nil
}
