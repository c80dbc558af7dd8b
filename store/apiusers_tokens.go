package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// APIUserToken is an API user's status and cached access token: what a
// replica needs to hand out a token, without the credentials.
type APIUserToken struct {
	Name   string
	Status APIUserStatus
	// AccessToken is the cached access token; empty when none is cached.
	AccessToken crypto.Secret
	TokenType   string
	Scopes      []string // as granted
	ExpiresAt   time.Time
	// ObtainedAt is when the access token was committed, shortly after
	// Trackunit issued it; with ExpiresAt it gives the token's lifetime.
	ObtainedAt time.Time
}

// APIUserState is an API user's row, decrypted, as read under its row lock.
type APIUserState struct {
	APIUserToken
	Username     string
	Password     crypto.Secret
	ClientID     crypto.Secret
	ClientSecret crypto.Secret
	// RequestScopes are the registered scopes a password grant asks for.
	RequestScopes []string
	// RefreshToken is the current refresh token; empty when none is stored.
	RefreshToken crypto.Secret
	// refreshEnc is its ciphertext as read, which a lease commit checks is
	// still the stored one.
	refreshEnc []byte
}

// APIUserTokens are what a successful grant returned.
type APIUserTokens struct {
	AccessToken crypto.Secret
	// RefreshToken becomes the current refresh token; empty means none was
	// issued, and none is kept.
	RefreshToken crypto.Secret
	TokenType    string
	Scopes       []string
	ExpiresAt    time.Time
}

// APIUserUpdate is what UpdateAPIUserLocked writes. The zero value writes
// nothing.
type APIUserUpdate struct {
	// Tokens replace the stored refresh token and cached access token, set
	// last_token_at and clear last_error.
	Tokens *APIUserTokens
	// Reject marks the user credentials_rejected and erases its tokens.
	Reject bool
	// DropRefreshToken erases the refresh token (Trackunit refused it); the
	// cached access token stays.
	DropRefreshToken bool
	// LastError, a short code such as "invalid_grant" (never upstream text),
	// is recorded as last_error unless Tokens are given.
	LastError string
}

func (u APIUserUpdate) empty() bool {
	return u.Tokens == nil && !u.Reject && !u.DropRefreshToken && u.LastError == ""
}

// APIUserToken reads an API user's status and cached access token without
// locking anything. ErrAPIUserNotFound when there is no such user;
// ErrUndecryptable when the cached token does not open here.
func (s *Store) APIUserToken(ctx context.Context, name string) (APIUserToken, error) {
	if !ValidAPIUserName(name) {
		return APIUserToken{}, ErrAPIUserNotFound
	}
	var (
		v          = APIUserToken{Name: name}
		tokenKeyID *string
		accessEnc  []byte
		expiresAt  *time.Time
		obtainedAt *time.Time
	)
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT status, token_key_id, access_token_enc, coalesce(token_type, ''),
				token_scopes, token_expires_at, last_token_at
			FROM api_users WHERE name = $1`, name).
			Scan(&v.Status, &tokenKeyID, &accessEnc, &v.TokenType, &v.Scopes, &expiresAt, &obtainedAt)
	})
	if errNoRows(err) {
		return APIUserToken{}, ErrAPIUserNotFound
	}
	if err != nil {
		return APIUserToken{}, fmt.Errorf("%w: read API user token: %w", ErrDatabase, err)
	}
	if accessEnc != nil {
		if v.AccessToken, err = s.openAPIUser(name, columnAccessToken, *tokenKeyID, accessEnc); err != nil {
			return APIUserToken{}, err
		}
		v.ExpiresAt = *expiresAt
		if obtainedAt != nil {
			v.ObtainedAt = *obtainedAt
		}
	}
	return v, nil
}

// UpdateAPIUserLocked is the one way an API user's tokens change. In one
// transaction it locks the user's row (SELECT ... FOR UPDATE: every other
// replica's update of this user waits here), decrypts it, calls fn with it,
// writes what fn returns, and commits. It returns the user's token as
// committed, so a caller hands out a token only once it is durable. When fn
// returns an error nothing is written and that error is returned.
//
// fn runs while the lock is held, so it may call Trackunit, but it must be
// bounded by ctx. ErrAPIUserNotFound when there is no such user (also when it
// was deleted while waiting for the lock).
func (s *Store) UpdateAPIUserLocked(ctx context.Context, name string, fn func(APIUserState) (APIUserUpdate, error)) (APIUserToken, error) {
	if !ValidAPIUserName(name) {
		return APIUserToken{}, ErrAPIUserNotFound
	}
	var out APIUserToken
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		st, err := s.lockAPIUser(ctx, tx, name)
		if err != nil {
			return err
		}
		upd, err := fn(st)
		if err != nil {
			return err
		}
		out = st.APIUserToken
		if upd.empty() {
			return nil
		}
		out, err = s.applyAPIUserUpdate(ctx, tx, st, upd)
		return err
	})
	if err != nil {
		return APIUserToken{}, err
	}
	return out, nil
}

// lockAPIUser reads and decrypts the user's row under FOR UPDATE.
func (s *Store) lockAPIUser(ctx context.Context, tx pgx.Tx, name string) (APIUserState, error) {
	row := tx.QueryRow(ctx, `SELECT `+apiUserStateColumns+`
		FROM api_users WHERE name = $1 FOR UPDATE`, name)
	return s.scanAPIUserState(name, row)
}

// apiUserStateColumns are what scanAPIUserState reads.
const apiUserStateColumns = `username, scopes, status, key_id, client_id_enc, client_secret_enc,
	password_enc, token_key_id, refresh_token_enc, access_token_enc, coalesce(token_type, ''),
	token_scopes, token_expires_at, last_token_at`

func (s *Store) scanAPIUserState(name string, row pgx.Row, extra ...any) (APIUserState, error) {
	var (
		st                            = APIUserState{APIUserToken: APIUserToken{Name: name}}
		keyID                         string
		idEnc, secretEnc, passwordEnc []byte
		tokenKeyID                    *string
		refreshEnc, accessEnc         []byte
		expiresAt, obtainedAt         *time.Time
	)
	err := row.
		Scan(append([]any{&st.Username, &st.RequestScopes, &st.Status, &keyID, &idEnc, &secretEnc, &passwordEnc,
			&tokenKeyID, &refreshEnc, &accessEnc, &st.TokenType, &st.Scopes, &expiresAt, &obtainedAt}, extra...)...)
	if errNoRows(err) {
		return APIUserState{}, ErrAPIUserNotFound
	}
	if err != nil {
		return APIUserState{}, fmt.Errorf("%w: read API user: %w", ErrDatabase, err)
	}
	st.refreshEnc = refreshEnc
	for _, c := range []struct {
		column string
		keyID  *string
		enc    []byte
		dst    *crypto.Secret
	}{
		{columnClientID, &keyID, idEnc, &st.ClientID},
		{columnClientSecret, &keyID, secretEnc, &st.ClientSecret},
		{columnPassword, &keyID, passwordEnc, &st.Password},
		{columnRefreshToken, tokenKeyID, refreshEnc, &st.RefreshToken},
		{columnAccessToken, tokenKeyID, accessEnc, &st.AccessToken},
	} {
		if c.enc == nil {
			continue
		}
		if *c.dst, err = s.openAPIUser(name, c.column, *c.keyID, c.enc); err != nil {
			return APIUserState{}, err
		}
	}
	if accessEnc != nil {
		st.ExpiresAt = *expiresAt
		if obtainedAt != nil {
			st.ObtainedAt = *obtainedAt
		}
	}
	return st, nil
}

// applyAPIUserUpdate writes upd to the locked row and returns the token as
// it will be committed.
func (s *Store) applyAPIUserUpdate(ctx context.Context, tx pgx.Tx, st APIUserState, upd APIUserUpdate) (APIUserToken, error) {
	out, _, err := s.writeAPIUserUpdate(ctx, tx, st, upd, "")
	return out, err
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// writeAPIUserUpdate writes upd. With owner set, it writes only while owner
// holds the user's lease and the stored refresh token is still the one st
// was read with, and it releases the lease; ok reports whether it wrote.
func (s *Store) writeAPIUserUpdate(ctx context.Context, db execer, st APIUserState, upd APIUserUpdate, owner string) (_ APIUserToken, ok bool, _ error) {
	name, out := st.Name, st.APIUserToken
	var (
		err error
		tag pgconn.CommandTag
	)
	// $1 is the name; the lease condition's owner and spent refresh token
	// are appended as the statement's last two arguments.
	lease := func(n int) (string, string) {
		if owner == "" {
			return "", ""
		}
		return ", lease_owner = NULL, lease_until = NULL",
			fmt.Sprintf(" AND lease_owner = $%d AND refresh_token_enc IS NOT DISTINCT FROM $%d", n, n+1)
	}
	leaseArgs := func(args ...any) []any {
		if owner == "" {
			return args
		}
		return append(args, owner, st.refreshEnc)
	}
	switch {
	case upd.Tokens != nil:
		t := upd.Tokens
		in := []sealInput{{columnAccessToken, t.AccessToken}}
		if !t.RefreshToken.IsZero() {
			in = append(in, sealInput{columnRefreshToken, t.RefreshToken})
		}
		keyID, c, serr := s.sealAll(name, in)
		if serr != nil {
			return APIUserToken{}, false, serr
		}
		var refreshEnc []byte
		if len(c) > 1 {
			refreshEnc = c[1]
		}
		scopes := slices.Clone(t.Scopes)
		if scopes == nil {
			scopes = []string{} // NULL would mean "no access token"
		}
		expires, now := pgTime(t.ExpiresAt), s.nowUTC()
		set, where := lease(9)
		tag, err = db.Exec(ctx, `UPDATE api_users SET token_key_id = $2, access_token_enc = $3,
				refresh_token_enc = $4, token_type = $5, token_scopes = $6, token_expires_at = $7,
				last_token_at = $8, last_error = NULL`+set+`
			WHERE name = $1`+where, leaseArgs(name, keyID, c[0], refreshEnc, t.TokenType, scopes, expires, now)...)
		out.AccessToken, out.TokenType, out.Scopes, out.ExpiresAt, out.ObtainedAt = t.AccessToken, t.TokenType, scopes, expires, now
	case upd.Reject:
		set, where := lease(4)
		tag, err = db.Exec(ctx, `UPDATE api_users SET status = '`+string(APIUserCredentialsRejected)+`',
				token_key_id = NULL, refresh_token_enc = NULL, access_token_enc = NULL,
				token_type = NULL, token_scopes = NULL, token_expires_at = NULL,
				last_error = $2, updated_at = $3`+set+`
			WHERE name = $1`+where, leaseArgs(name, clean(upd.LastError, maxLastErrorLen), s.nowUTC())...)
		out = APIUserToken{Name: name, Status: APIUserCredentialsRejected}
	default:
		set, where := lease(4)
		tag, err = db.Exec(ctx, `UPDATE api_users SET
				refresh_token_enc = CASE WHEN $2 THEN NULL ELSE refresh_token_enc END,
				token_key_id = CASE WHEN $2 AND access_token_enc IS NULL THEN NULL ELSE token_key_id END,
				last_error = coalesce(NULLIF($3, ''), last_error)`+set+`
			WHERE name = $1`+where, leaseArgs(name, upd.DropRefreshToken, clean(upd.LastError, maxLastErrorLen))...)
	}
	if err != nil {
		return APIUserToken{}, false, fmt.Errorf("%w: update API user tokens: %w", ErrDatabase, err)
	}
	return out, tag.RowsAffected() == 1, nil
}

// LeaseAPIUser is the first short step of an API user's refresh, one
// statement on a pooled connection that is returned before the caller calls
// Trackunit. When the user's cached access token is valid past now+need, the
// row comes back with TokenShared. Otherwise, when the user is active and
// its lease is free or expired (at now, on the broker's clock), owner takes
// the lease until leaseUntil (LeaseTaken); else another replica is
// refreshing, or the user is credentials_rejected (LeaseBusy: check
// Status). The row comes back decrypted. ErrAPIUserNotFound when there is
// no such user.
func (s *Store) LeaseAPIUser(ctx context.Context, name, owner string, now time.Time, need time.Duration, leaseUntil time.Time) (APIUserState, LeaseState, error) {
	if !ValidAPIUserName(name) {
		return APIUserState{}, 0, ErrAPIUserNotFound
	}
	var (
		st     APIUserState
		leased bool
	)
	err := s.retry(ctx, func() error {
		var err error
		// When the lease is taken the row comes from RETURNING: the version
		// the lease was written to, so a refresh committed by another
		// replica just before is seen (the statement's snapshot, which the
		// second branch reads, may predate it; that is fine for polling).
		st, err = s.scanAPIUserState(name, s.pool.QueryRow(ctx, `WITH taken AS (
				UPDATE api_users SET lease_owner = $2, lease_until = $3
				WHERE name = $1 AND status = '`+string(APIUserActive)+`'
					AND NOT coalesce(access_token_enc IS NOT NULL AND token_expires_at > $5, false)
					AND (lease_until IS NULL OR lease_until <= $4)
				RETURNING `+apiUserStateColumns+`
			)
			SELECT *, true FROM taken
			UNION ALL
			SELECT `+apiUserStateColumns+`, false FROM api_users
			WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM taken)`,
			name, owner, pgTime(leaseUntil), pgTime(now), pgTime(now.Add(need))), &leased)
		return err
	})
	switch {
	case err != nil:
		return APIUserState{}, 0, err
	case leased:
		return st, LeaseTaken, nil
	case st.Status == APIUserActive && !st.AccessToken.IsZero() && st.ExpiresAt.After(now.Add(need)):
		return st, TokenShared, nil
	}
	return st, LeaseBusy, nil
}

// CommitAPIUserLease is the second short step: it writes upd only while
// owner still holds the lease and the stored refresh token is still the one
// st was read with (the one the refresh spent), and releases the lease. ok
// is false when either no longer holds: nothing was written, and the new
// tokens must not be handed out.
func (s *Store) CommitAPIUserLease(ctx context.Context, st APIUserState, owner string, upd APIUserUpdate) (APIUserToken, bool, error) {
	if owner == "" {
		return APIUserToken{}, false, errors.New("store: commit API user lease: empty owner")
	}
	return s.writeAPIUserUpdate(ctx, s.pool, st, upd, owner)
}

// ReleaseAPIUserLease gives owner's lease up without writing anything.
func (s *Store) ReleaseAPIUserLease(ctx context.Context, name, owner string) error {
	err := s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `UPDATE api_users SET lease_owner = NULL, lease_until = NULL
			WHERE name = $1 AND lease_owner = $2`, name, owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: release API user lease: %w", ErrDatabase, err)
	}
	return nil
}
