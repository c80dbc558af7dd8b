package store

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// Page sizes of ListInstalls, as in the contract's ListInstalls.
const (
	DefaultListLimit = 50
	MaxListLimit     = 1000
	// MaxEvents bounds the events GetInstall returns.
	MaxEvents = 1000
)

// Install is an install as operators see it. It never holds a secret.
type Install struct {
	IrisAppID string
	AccountID string
	Status    InstallStatus
	// InstalledAt is when the install was (re)installed; zero when only an
	// UNINSTALLED has ever been seen for it.
	InstalledAt time.Time
	// UpdatedAt is the last change of credentials or status (token results
	// do not count).
	UpdatedAt     time.Time
	UninstalledAt *time.Time
	LastTokenAt   *time.Time
	KeyID         string // empty while no credentials are stored
	LastError     string
}

// Event is one entry of an install's event log.
type Event struct {
	ID         int64     `db:"id"`
	Type       string    `db:"type"`
	Outcome    string    `db:"outcome"`
	JTI        string    `db:"jti"`
	RemoteAddr string    `db:"remote_addr"`
	EventAt    time.Time `db:"event_at"`
	ReceivedAt time.Time `db:"received_at"`
	// UnknownFields are the names of unknown body fields (never values).
	UnknownFields []string `db:"unknown_fields"`
}

// ListFilter selects a page of installs. Empty fields do not filter.
type ListFilter struct {
	IrisAppID string
	Status    InstallStatus
	// After is the last install of the previous page (keyset pagination).
	After *InstallKey
	// Limit is how many rows to return: DefaultListLimit when 0 or less, at
	// most MaxListLimit+1, so that a caller serving pages of MaxListLimit
	// can ask for one row more to learn whether another page follows.
	Limit int
}

// installView is the scan target for Install; the nullable columns become
// the zero value of Install's plain fields.
type installView struct {
	IrisAppID     string        `db:"iris_app_id"`
	AccountID     string        `db:"account_id"`
	Status        InstallStatus `db:"status"`
	InstalledAt   *time.Time    `db:"installed_at"`
	UpdatedAt     time.Time     `db:"updated_at"`
	UninstalledAt *time.Time    `db:"uninstalled_at"`
	LastTokenAt   *time.Time    `db:"last_token_at"`
	KeyID         string        `db:"key_id"`
	LastError     string        `db:"last_error"`
}

const installViewColumns = `iris_app_id, account_id, status, installed_at, updated_at, uninstalled_at,
	last_token_at, coalesce(key_id, '') AS key_id, coalesce(last_error, '') AS last_error`

func (v installView) install() Install {
	in := Install{
		IrisAppID: v.IrisAppID, AccountID: v.AccountID, Status: v.Status,
		UpdatedAt: v.UpdatedAt, UninstalledAt: v.UninstalledAt, LastTokenAt: v.LastTokenAt,
		KeyID: v.KeyID, LastError: v.LastError,
	}
	if v.InstalledAt != nil {
		in.InstalledAt = *v.InstalledAt
	}
	return in
}

// InstallCredentials returns an install's decrypted credentials. An
// uninstalled install has no credentials: its Status says so and both
// secrets are empty. ErrNotFound when the install is unknown;
// ErrUndecryptable when the stored ciphertexts do not open here (moved,
// altered, or under a key id missing from the keyring).
func (s *Store) InstallCredentials(ctx context.Context, irisAppID, accountID string) (Credentials, error) {
	key, err := installKey(irisAppID, accountID)
	if err != nil {
		return Credentials{}, ErrNotFound // no such install can exist
	}
	var (
		c         = Credentials{IrisAppID: key.IrisAppID, AccountID: key.AccountID}
		keyID     *string
		idEnc     []byte
		secretEnc []byte
	)
	err = s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT status, key_id, client_id_enc, client_secret_enc, credentials_version
			FROM installs WHERE iris_app_id = $1 AND account_id = $2`, key.IrisAppID, key.AccountID).
			Scan(&c.Status, &keyID, &idEnc, &secretEnc, &c.Version)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Credentials{}, ErrNotFound
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("%w: read install credentials: %w", ErrDatabase, err)
	}
	if keyID == nil {
		return c, nil
	}
	if c.ClientID, c.ClientSecret, err = s.open(key, *keyID, idEnc, secretEnc); err != nil {
		return Credentials{}, err
	}
	return c, nil
}

// ListInstalls returns one page of installs ordered by (irisAppId,
// accountId). Each page is an index range scan starting after f.After, so a
// late page costs what the first costs.
func (s *Store) ListInstalls(ctx context.Context, f ListFilter) ([]Install, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Status != "" {
		if !f.Status.valid() {
			return nil, fmt.Errorf("%w: unknown status %q", ErrInvalid, f.Status)
		}
		where = append(where, "status = "+arg(f.Status))
	}
	if f.IrisAppID != "" {
		// Postgres refuses such text with an error that would read as a
		// database failure; it is the caller's.
		if !utf8.ValidString(f.IrisAppID) || strings.ContainsRune(f.IrisAppID, 0) {
			return nil, fmt.Errorf("%w: irisAppId filter is not valid UTF-8 text", ErrInvalid)
		}
		where = append(where, "iris_app_id = "+arg(f.IrisAppID))
	}
	if f.After != nil {
		after, err := installKey(f.After.IrisAppID, f.After.AccountID)
		if err != nil {
			return nil, fmt.Errorf("store: list installs: page start: %w", err)
		}
		where = append(where, "(iris_app_id, account_id) > ("+arg(after.IrisAppID)+", "+arg(after.AccountID)+")")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit+1)
	q := "SELECT " + installViewColumns + " FROM installs"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY iris_app_id, account_id LIMIT " + arg(limit)

	rows, _ := s.pool.Query(ctx, q, args...)
	views, err := pgx.CollectRows(rows, pgx.RowToStructByName[installView])
	if err != nil {
		return nil, fmt.Errorf("%w: list installs: %w", ErrDatabase, err)
	}
	installs := make([]Install, len(views))
	for i, v := range views {
		installs[i] = v.install()
	}
	return installs, nil
}

// GetInstall returns an install and its latest events (newest first), at
// most events of them (capped at MaxEvents). ErrNotFound when the install
// is unknown, even if ignored events were logged for its key.
func (s *Store) GetInstall(ctx context.Context, irisAppID, accountID string, events int) (Install, []Event, error) {
	key, err := installKey(irisAppID, accountID)
	if err != nil {
		return Install{}, nil, ErrNotFound
	}
	events = min(max(events, 0), MaxEvents)
	// Both reads in one round trip.
	b := &pgx.Batch{}
	b.Queue("SELECT "+installViewColumns+" FROM installs WHERE iris_app_id = $1 AND account_id = $2",
		key.IrisAppID, key.AccountID)
	b.Queue(`SELECT id, type, outcome, coalesce(jti, '') AS jti, coalesce(remote_addr, '') AS remote_addr,
		event_at, received_at, coalesce(unknown_fields, '{}') AS unknown_fields FROM install_events WHERE iris_app_id = $1 AND account_id = $2
		ORDER BY id DESC LIMIT $3`, key.IrisAppID, key.AccountID, events)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()

	rows, _ := br.Query()
	view, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[installView])
	if errors.Is(err, pgx.ErrNoRows) {
		return Install{}, nil, ErrNotFound
	}
	if err != nil {
		return Install{}, nil, fmt.Errorf("%w: get install: %w", ErrDatabase, err)
	}
	rows, _ = br.Query()
	evs, err := pgx.CollectRows(rows, pgx.RowToStructByName[Event])
	if err != nil {
		return Install{}, nil, fmt.Errorf("%w: get install events: %w", ErrDatabase, err)
	}
	if err := br.Close(); err != nil {
		return Install{}, nil, fmt.Errorf("%w: get install: %w", ErrDatabase, err)
	}
	return view.install(), evs, nil
}

// KeyIDs returns the key ids anything is sealed under, as KeyIDCounts
// would list them, without counting: for installs it skips through
// installs_key_id_idx one distinct key id at a time (a loose index scan),
// so its cost grows with the number of key ids, not of installs.
func (s *Store) KeyIDs(ctx context.Context) ([]string, error) {
	rows, _ := s.pool.Query(ctx, `WITH RECURSIVE k AS (
			(SELECT key_id FROM installs WHERE key_id IS NOT NULL ORDER BY key_id LIMIT 1)
			UNION ALL
			SELECT (SELECT i.key_id FROM installs i WHERE i.key_id IS NOT NULL AND i.key_id > k.key_id
				ORDER BY i.key_id LIMIT 1)
			FROM k WHERE k.key_id IS NOT NULL
		)
		SELECT key_id FROM k WHERE key_id IS NOT NULL
		UNION
		SELECT key_id FROM api_users
		UNION
		SELECT token_key_id FROM api_users WHERE token_key_id IS NOT NULL
		ORDER BY 1`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("%w: list key ids: %w", ErrDatabase, err)
	}
	return ids, nil
}

// KeyIDCounts returns, per key id, how many sets of ciphertexts are sealed
// under it: an install's credentials, an API user's credentials, and an API
// user's refresh and access tokens each count once. The start-up check
// compares it with the keyring.
func (s *Store) KeyIDCounts(ctx context.Context) (map[string]int64, error) {
	rows, _ := s.pool.Query(ctx, `SELECT key_id, sum(n)::bigint FROM (
			SELECT key_id, count(*) AS n FROM installs WHERE key_id IS NOT NULL GROUP BY key_id
			UNION ALL
			SELECT key_id, count(*) FROM api_users GROUP BY key_id
			UNION ALL
			SELECT token_key_id, count(*) FROM api_users WHERE token_key_id IS NOT NULL GROUP BY token_key_id
		) AS sealed GROUP BY key_id`)
	counts := make(map[string]int64)
	var (
		id string
		n  int64
	)
	_, err := pgx.ForEachRow(rows, []any{&id, &n}, func() error {
		counts[id] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: count key ids: %w", ErrDatabase, err)
	}
	return counts, nil
}

func (st InstallStatus) valid() bool {
	switch st {
	case StatusInstalled, StatusUninstalled, StatusCredentialsRejected:
		return true
	}
	return false
}

// ErrBadPageToken is the ErrInvalid of a page token that was not issued
// by this deployment for the same filters: edited, truncated, forged or
// reused with other filters.
var ErrBadPageToken = fmt.Errorf("%w: pageToken is not one this service issued for these filters", ErrInvalid)

// pageTokenLabel names the key page tokens are authenticated under.
const pageTokenLabel = "page-token/v1"

// maxPageTokenLen bounds what ParsePageToken looks at.
const maxPageTokenLen = 1024

// pageTokenBody is the cursor inside a page token: the last key of the
// previous page.
type pageTokenBody struct {
	App     string `json:"a"`
	Account string `json:"c"`
}

// PageToken returns the opaque cursor for the page of the listing (by app
// and status) that follows after. It is authenticated with HMAC-SHA256
// under a key derived from the primary encryption key, so every replica
// accepts it and no caller can forge or edit one, or reuse it with other
// filters.
func (s *Store) PageToken(after InstallKey, app string, status InstallStatus) string {
	body, _ := json.Marshal(pageTokenBody{App: after.IrisAppID, Account: after.AccountID})
	return base64.RawURLEncoding.EncodeToString(body) + "." +
		base64.RawURLEncoding.EncodeToString(s.pageTokenMAC(body, app, status))
}

// ParsePageToken returns the cursor of a token PageToken issued for the
// same filters; anything else is ErrInvalid.
func (s *Store) ParsePageToken(token, app string, status InstallStatus) (InstallKey, error) {
	bad := ErrBadPageToken
	if len(token) > maxPageTokenLen {
		return InstallKey{}, bad
	}
	b64Body, b64Mac, ok := strings.Cut(token, ".")
	if !ok {
		return InstallKey{}, bad
	}
	body, err1 := base64.RawURLEncoding.DecodeString(b64Body)
	mac, err2 := base64.RawURLEncoding.DecodeString(b64Mac)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, s.pageTokenMAC(body, app, status)) {
		return InstallKey{}, bad
	}
	var t pageTokenBody
	if err := json.Unmarshal(body, &t); err != nil {
		return InstallKey{}, bad
	}
	return InstallKey{IrisAppID: t.App, AccountID: t.Account}, nil
}

func (s *Store) pageTokenMAC(body []byte, app string, status InstallStatus) []byte {
	s.pageKeyOnce.Do(func() {
		if s.keys == nil { // a store that seals nothing (tests): a key of this process only
			s.pageKey = make([]byte, crypto.KeySize)
			_, _ = rand.Read(s.pageKey)
			return
		}
		s.pageKey = s.keys.Derive(pageTokenLabel)
	})
	m := hmac.New(sha256.New, s.pageKey)
	// Length-prefixed, so no two (body, app, status) share an input.
	for _, part := range [][]byte{body, []byte(app), []byte(status)} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		m.Write(n[:])
		m.Write(part)
	}
	return m.Sum(nil)
}

// InstallVersion reads an install's status and credentials version, for a
// replica that must check its cached token is still of the current
// credentials. ErrNotFound when there is no such install.
func (s *Store) InstallVersion(ctx context.Context, irisAppID, accountID string) (InstallStatus, int64, error) {
	key, err := installKey(irisAppID, accountID)
	if err != nil {
		return "", 0, ErrNotFound
	}
	var (
		st      InstallStatus
		version int64
	)
	err = s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT status, credentials_version FROM installs
			WHERE iris_app_id = $1 AND account_id = $2`, key.IrisAppID, key.AccountID).Scan(&st, &version)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, ErrNotFound
	}
	if err != nil {
		return "", 0, fmt.Errorf("%w: read install version: %w", ErrDatabase, err)
	}
	return st, version, nil
}
