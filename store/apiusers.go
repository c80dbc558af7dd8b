package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// ErrAPIUserNotFound means no API user has the name asked for. It wraps
// ErrNotFound.
var ErrAPIUserNotFound = fmt.Errorf("%w: no such API user", ErrNotFound)

// APIUserStatus is the state of a registered API user.
type APIUserStatus string

// The API user statuses.
const (
	// APIUserActive: tokens are obtained with the stored credentials.
	APIUserActive APIUserStatus = "active"
	// APIUserCredentialsRejected: Trackunit refused the password grant;
	// no upstream call is made until the credentials are replaced.
	APIUserCredentialsRejected APIUserStatus = "credentials_rejected"
)

// Table and column names in the associated data of the api_users
// ciphertexts; client_id and client_secret are shared with installs.
const (
	apiUsersTable      = "api_users"
	columnPassword     = "password"
	columnRefreshToken = "refresh_token"
	columnAccessToken  = "access_token"
)

// Bounds of an API user's registration.
const (
	maxUsernameLen   = 256
	maxAPISecretLen  = 4096
	maxAPIUserScopes = 32
	maxScopeLen      = 256
)

// apiUserName is the rule for names, the same as the CHECK in migration
// 0002: they appear in URLs, logs and command lines, so no spaces or
// punctuation beyond what identifiers need.
var apiUserName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

// ValidAPIUserName reports whether name can name an API user: 1 to 128
// letters, digits, '.', '_', '@' or '-', starting with a letter or digit.
func ValidAPIUserName(name string) bool { return apiUserName.MatchString(name) }

// DefaultAPIUserScopes returns the scopes an API user registered without any
// asks for: "api" for the IRIS API and "offline_access" for a refresh token.
func DefaultAPIUserScopes() []string { return []string{"api", "offline_access"} }

// NewAPIUser is the registration of a Trackunit API user.
type NewAPIUser struct {
	Name         string // the name callers ask for tokens by
	Username     string // the Trackunit API user name
	Password     crypto.Secret
	ClientID     crypto.Secret
	ClientSecret crypto.Secret
	// Scopes to request; empty means DefaultAPIUserScopes. Duplicates are
	// dropped, the order is kept.
	Scopes []string
}

// ValidationError lists what is wrong with a NewAPIUser. Its Message names
// fields, never their values, so it is safe to show to the caller.
// errors.Is(err, ErrInvalid) holds for it.
type ValidationError struct {
	Message string
}

func (e *ValidationError) Error() string { return "store: invalid API user: " + e.Message }

// Unwrap makes a ValidationError match ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Validate reports every problem of u at once as a *ValidationError, or nil.
func (u NewAPIUser) Validate() error {
	_, err := u.normalized()
	return err
}

// normalized validates u and returns it with its scopes defaulted and
// de-duplicated.
func (u NewAPIUser) normalized() (NewAPIUser, error) {
	var problems []string
	if !ValidAPIUserName(u.Name) {
		problems = append(problems, "name must be 1 to 128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
	}
	if !printable(u.Username, maxUsernameLen) {
		problems = append(problems, fmt.Sprintf("username is required: 1 to %d bytes of printable UTF-8", maxUsernameLen))
	}
	problems = append(problems, secretProblems(
		namedSecret{"password", u.Password}, namedSecret{"clientId", u.ClientID}, namedSecret{"clientSecret", u.ClientSecret})...)
	scopes, scopeProblems := uniqueScopes(u.Scopes)
	problems = append(problems, scopeProblems...)
	if len(problems) > 0 {
		return NewAPIUser{}, &ValidationError{Message: strings.Join(problems, "; ")}
	}
	if len(scopes) == 0 {
		scopes = DefaultAPIUserScopes()
	}
	u.Scopes = scopes
	return u, nil
}

func printable(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// namedSecret is a secret field of a registration, named as the API names it.
type namedSecret struct {
	name  string
	value crypto.Secret
}

// secretProblems checks that each secret of a registration is 1 to
// maxAPISecretLen bytes of UTF-8 without NUL, naming the field, never its
// value.
func secretProblems(secrets ...namedSecret) []string {
	var problems []string
	for _, f := range secrets {
		if v := f.value.Reveal(); v == "" || len(v) > maxAPISecretLen || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			problems = append(problems, fmt.Sprintf("%s is required: 1 to %d bytes of UTF-8", f.name, maxAPISecretLen))
		}
	}
	return problems
}

// uniqueScopes returns the scopes of a registration (an API user's or an
// API key's) without duplicates, in their order, with what is wrong with
// them: a scope that is not a scope-token, more than maxAPIUserScopes.
func uniqueScopes(in []string) ([]string, []string) {
	var problems []string
	scopes := make([]string, 0, len(in))
	for _, s := range in {
		if !ValidScope(s) {
			problems = append(problems, "scopes must be OAuth scope tokens (printable ASCII without spaces, quotes or backslashes)")
			break
		}
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	if len(scopes) > maxAPIUserScopes {
		problems = append(problems, fmt.Sprintf("at most %d scopes", maxAPIUserScopes))
	}
	return scopes, problems
}

// ValidScope reports whether s is an RFC 6749 scope-token of at most 256
// bytes: printable ASCII without spaces, quotes or backslashes. Every scope
// the broker stores or asks Trackunit for passes it.
func ValidScope(s string) bool {
	if s == "" || len(s) > maxScopeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// APIUser is an API user as operators see it. It never holds a secret.
type APIUser struct {
	Name        string        `db:"name"`
	Username    string        `db:"username"`
	Scopes      []string      `db:"scopes"`
	Status      APIUserStatus `db:"status"`
	CreatedAt   time.Time     `db:"created_at"`
	UpdatedAt   time.Time     `db:"updated_at"`
	LastTokenAt *time.Time    `db:"last_token_at"`
	LastError   string        `db:"last_error"`
}

const apiUserColumns = `name, username, scopes, status, created_at, updated_at, last_token_at,
	coalesce(last_error, '') AS last_error`

// apiUserLocation is where a column of an API user's row lives, for the
// ciphertext's associated data.
func apiUserLocation(name, column string) crypto.Location {
	return crypto.Location{Table: apiUsersTable, Row: name, Column: column}
}

// CreateAPIUser registers an API user, or replaces the registration of the
// one with the same name: new credentials, username and scopes, status
// active, and its refresh and access tokens discarded (they belong to the
// old credentials). Replacing is how rejected credentials are corrected. A
// refresh in progress for the user finishes first: the upsert waits for its
// row lock. A *ValidationError when u can never be stored.
func (s *Store) CreateAPIUser(ctx context.Context, u NewAPIUser) (APIUser, error) {
	u, err := u.normalized()
	if err != nil {
		return APIUser{}, err
	}
	keyID, cipher, err := s.sealAll(u.Name, []sealInput{
		{columnClientID, u.ClientID}, {columnClientSecret, u.ClientSecret}, {columnPassword, u.Password},
	})
	if err != nil {
		return APIUser{}, err
	}
	now := s.nowUTC()
	var out APIUser
	// Repeating the upsert after a lost reply stores the same registration.
	err = s.retry(ctx, func() error {
		rows, _ := s.pool.Query(ctx, `INSERT INTO api_users AS u (name, username, scopes, status,
				key_id, client_id_enc, client_secret_enc, password_enc, created_at, updated_at)
			VALUES ($1, $2, $3, '`+string(APIUserActive)+`', $4, $5, $6, $7, $8, $8)
			ON CONFLICT (name) DO UPDATE SET
				username = EXCLUDED.username, scopes = EXCLUDED.scopes, status = '`+string(APIUserActive)+`',
				key_id = EXCLUDED.key_id, client_id_enc = EXCLUDED.client_id_enc,
				client_secret_enc = EXCLUDED.client_secret_enc, password_enc = EXCLUDED.password_enc,
				token_key_id = NULL, refresh_token_enc = NULL, access_token_enc = NULL,
				token_type = NULL, token_scopes = NULL, token_expires_at = NULL,
				updated_at = EXCLUDED.updated_at, last_error = NULL,
				-- a refresh in flight with the old credentials must not commit
				lease_owner = NULL, lease_until = NULL
			RETURNING `+apiUserColumns,
			u.Name, u.Username, u.Scopes, keyID, cipher[0], cipher[1], cipher[2], now)
		var err error
		out, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[APIUser])
		return err
	})
	if err != nil {
		return APIUser{}, fmt.Errorf("%w: create API user: %w", ErrDatabase, err)
	}
	return out, nil
}

// ListAPIUsers returns every API user, ordered by name. API users are
// registered by hand, so there are few and the list is not paged.
func (s *Store) ListAPIUsers(ctx context.Context) ([]APIUser, error) {
	var users []APIUser
	err := s.retry(ctx, func() error {
		rows, _ := s.pool.Query(ctx, `SELECT `+apiUserColumns+` FROM api_users ORDER BY name`)
		var err error
		users, err = pgx.CollectRows(rows, pgx.RowToStructByName[APIUser])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: list API users: %w", ErrDatabase, err)
	}
	return users, nil
}

// DeleteAPIUser removes an API user with its secrets and tokens.
// ErrAPIUserNotFound when there is none by that name. It waits for a refresh
// in progress for the user to finish.
func (s *Store) DeleteAPIUser(ctx context.Context, name string) error {
	if !ValidAPIUserName(name) {
		return ErrAPIUserNotFound
	}
	// Not retried: after a lost reply, a repeat would report a deletion
	// that succeeded as not found.
	tag, err := s.pool.Exec(ctx, `DELETE FROM api_users WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("%w: delete API user: %w", ErrDatabase, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrAPIUserNotFound
	}
	return nil
}

// sealInput is one plaintext and the column it goes to.
type sealInput struct {
	column string
	value  crypto.Secret
}

// sealAll seals values for the API user's row under the primary key; they
// share the returned key id.
func (s *Store) sealAll(name string, in []sealInput) (string, [][]byte, error) {
	out := make([][]byte, len(in))
	var keyID string
	for i, v := range in {
		id, c, err := s.keys.Seal([]byte(v.value.Reveal()), apiUserLocation(name, v.column))
		if err != nil {
			return "", nil, fmt.Errorf("store: seal %s: %w", v.column, err)
		}
		keyID, out[i] = id, c
	}
	return keyID, out, nil
}

// openAPIUser decrypts one column of an API user's row. Failures wrap
// ErrUndecryptable and never carry plaintext.
func (s *Store) openAPIUser(name, column, keyID string, ciphertext []byte) (crypto.Secret, error) {
	plain, err := s.keys.Open(keyID, ciphertext, apiUserLocation(name, column))
	if err != nil {
		return "", fmt.Errorf("%w: %s of API user %s: %w", ErrUndecryptable, column, name, err)
	}
	return crypto.Secret(plain), nil
}

// errNoRows reports a missing row.
func errNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
