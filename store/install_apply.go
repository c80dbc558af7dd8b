package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// Event types of the install callback. Any other type is recorded and
// ignored.
const (
	TypeInstalled   = "INSTALLED"
	TypeUninstalled = "UNINSTALLED"
)

// Outcome is what an install event did; the callback answers it as
// {"status": outcome}.
type Outcome string

// The outcomes of ApplyInstallEvent.
const (
	OutcomeInstalled   Outcome = "installed"
	OutcomeUninstalled Outcome = "uninstalled"
	OutcomeIgnored     Outcome = "ignored"
	OutcomeStale       Outcome = "stale"
)

// ChannelInstallChanged is the NOTIFY channel announcing that an existing
// install's credentials or state changed; the payload is JSON
// {"irisAppId","accountId"}. It is sent in the transaction making the
// change, so it arrives only if the change committed. An install's first
// event is not announced (there is nothing cached to invalidate), so a
// subscriber must not cache "unknown install".
const ChannelInstallChanged = "irisx_install_changed"

// InstallEvent is one received install callback.
type InstallEvent struct {
	Type                   string
	IrisAppID, AccountID   string
	ClientID, ClientSecret crypto.Secret
	EventAt                time.Time // JWT iat, else receipt time; zero means ReceivedAt
	ReceivedAt             time.Time // zero means the store's clock
	JTI, RemoteAddr        string
	// UnknownFields are the names of body fields the broker does not know
	// (never their values); nil when there were none.
	UnknownFields []string
}

// installRow is the mutable state of one installs row.
type installRow struct {
	Status             InstallStatus `db:"status"`
	KeyID              *string       `db:"key_id"`
	ClientIDEnc        []byte        `db:"client_id_enc"`
	ClientSecretEnc    []byte        `db:"client_secret_enc"`
	CredentialsVersion int64         `db:"credentials_version"`
	InstalledAt        *time.Time    `db:"installed_at"`
	UpdatedAt          time.Time     `db:"updated_at"`
	UninstalledAt      *time.Time    `db:"uninstalled_at"`
	LastEventAt        time.Time     `db:"last_event_at"`
	LastError          *string       `db:"last_error"`
}

const installRowColumns = `status, key_id, client_id_enc, client_secret_enc, credentials_version,
	installed_at, updated_at, uninstalled_at, last_event_at, last_error`

const (
	lockInstallSQL = `SELECT ` + installRowColumns + `
		FROM installs WHERE iris_app_id = $1 AND account_id = $2 FOR UPDATE`
	// insertFirstSQL takes installRow.args then the event's type, outcome,
	// received_at, jti and remote address. The event row exists only if the
	// install row was inserted, so the statement's row count says which
	// happened; the event's time is the row's last_event_at ($11).
	insertFirstSQL = `WITH ins AS (
			INSERT INTO installs (iris_app_id, account_id, ` + installRowColumns + `)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (iris_app_id, account_id) DO NOTHING
			RETURNING iris_app_id, account_id
		)
		INSERT INTO install_events
			(iris_app_id, account_id, type, outcome, event_at, received_at, jti, remote_addr, unknown_fields)
		SELECT iris_app_id, account_id, $13::text, $14::text, $11, $15::timestamptz,
			NULLIF($16::text, ''), NULLIF($17::text, ''), $18::text[] FROM ins`
	updateInstallSQL = `UPDATE installs SET status = $3, key_id = $4, client_id_enc = $5,
		client_secret_enc = $6, credentials_version = $7, installed_at = $8, updated_at = $9,
		uninstalled_at = $10, last_event_at = $11, last_error = $12
		WHERE iris_app_id = $1 AND account_id = $2`
	insertEventSQL = `INSERT INTO install_events
		(iris_app_id, account_id, type, outcome, event_at, received_at, jti, remote_addr, unknown_fields)
		VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''), NULLIF($8, ''), $9)`
	notifySQL = `SELECT pg_notify($1, $2)`
)

func (r *installRow) args(k InstallKey) []any {
	return []any{k.IrisAppID, k.AccountID, r.Status, r.KeyID, r.ClientIDEnc, r.ClientSecretEnc,
		r.CredentialsVersion, r.InstalledAt, r.UpdatedAt, r.UninstalledAt, r.LastEventAt, r.LastError}
}

// received is a normalised event: canonical key, bounded strings, times at
// Postgres precision.
type received struct {
	key                 InstallKey
	typ                 string
	eventAt, receivedAt time.Time
	jti, remoteAddr     string
	unknownFields       []string
}

func (r *received) eventArgs(o Outcome) []any {
	return []any{r.key.IrisAppID, r.key.AccountID, r.typ, o, r.eventAt, r.receivedAt, r.jti, r.remoteAddr, r.unknownFields}
}

// sealed are the credentials of an INSTALLED, in plain text for comparison
// and sealed for storage.
type sealed struct {
	clientID, clientSecret crypto.Secret
	keyID                  string
	clientIDEnc, secretEnc []byte
}

// plan is what applying one event to a locked row does.
type plan struct {
	outcome Outcome
	update  *installRow // nil: the row stays as it is
	notify  bool
}

// ApplyInstallEvent records ev in the event log and applies it to its
// install, atomically, following the contract's event semantics:
//   - INSTALLED stores the credentials and sets the status installed. A
//     repeat with the same credentials on an installed install changes
//     nothing; new credentials, a reinstall, or a repeat on a
//     credentials_rejected install (the only way back from a rejection)
//     replace the credentials, bump credentials_version and notify.
//   - UNINSTALLED sets the status uninstalled and erases the credentials. An
//     UNINSTALLED for an install never seen creates it as uninstalled, so
//     that a delayed, older INSTALLED arriving afterwards is stale instead
//     of resurrecting it.
//   - Any other type is only logged, as "ignored".
//   - An event older than the install's last applied event is logged as
//     "stale" and changes nothing; an equal time is not stale, because
//     duplicate deliveries share their iat.
//
// Concurrent deliveries for one install serialise on its row lock (or on
// the primary key, for the first one). A change to an existing install is
// announced on ChannelInstallChanged in the same transaction.
func (s *Store) ApplyInstallEvent(ctx context.Context, ev InstallEvent) (Outcome, error) {
	key, err := installKey(ev.IrisAppID, ev.AccountID)
	if err != nil {
		return "", err
	}
	rec := received{
		key:        key,
		typ:        clean(ev.Type, maxTypeLen),
		eventAt:    pgTime(ev.EventAt),
		receivedAt: pgTime(ev.ReceivedAt),
		jti:        clean(ev.JTI, maxJTILen),
		remoteAddr: clean(ev.RemoteAddr, maxRemoteAddrLen),
		// nil stays NULL: "none seen" and "not recorded" (old rows) differ.
		unknownFields: cleanList(ev.UnknownFields, true),
	}
	if ev.ReceivedAt.IsZero() {
		rec.receivedAt = s.nowUTC()
	}
	if ev.EventAt.IsZero() {
		rec.eventAt = rec.receivedAt
	}

	var creds *sealed
	switch ev.Type {
	case TypeInstalled:
		if ev.ClientID.IsZero() || ev.ClientSecret.IsZero() {
			return "", fmt.Errorf("%w: INSTALLED without clientId or clientSecret", ErrInvalid)
		}
		// Sealed before the transaction, which then holds the row lock
		// only for database work.
		if creds, err = s.seal(key, ev.ClientID, ev.ClientSecret); err != nil {
			return "", err
		}
	case TypeUninstalled:
	default:
		err := s.retry(ctx, func() error {
			_, err := s.pool.Exec(ctx, insertEventSQL, rec.eventArgs(OutcomeIgnored)...)
			return err
		})
		if err != nil {
			return "", fmt.Errorf("%w: record install event: %w", ErrDatabase, err)
		}
		return OutcomeIgnored, nil
	}

	// Usually the row either does not exist yet (a first INSTALLED) or
	// does; each case has its own fast path. A row deleted by hand between
	// the two sends us round again.
	for range 3 {
		if outcome, inserted, err := s.applyFirst(ctx, rec, creds); err != nil || inserted {
			return outcome, err
		}
		if outcome, found, err := s.applyExisting(ctx, rec, creds); err != nil || found {
			return outcome, err
		}
	}
	return "", errors.New("store: apply install event: install row keeps vanishing")
}

// applyFirst creates the install from its first event and logs the event,
// in one statement (one round trip, atomic on its own). It inserts nothing
// and reports false when the row already exists.
//
// It does not notify: nothing can be cached for an install that did not
// exist, and a NOTIFY makes Postgres serialise the commits of all notifying
// transactions (a global lock held across the WAL flush), which would cap
// the rate of new installs at one per disk flush.
func (s *Store) applyFirst(ctx context.Context, rec received, creds *sealed) (Outcome, bool, error) {
	first := s.firstRow(rec, creds)
	outcome := outcomeOf(rec.typ)
	args := append(first.args(rec.key), rec.typ, outcome, rec.receivedAt, rec.jti, rec.remoteAddr, rec.unknownFields)
	var tag pgconn.CommandTag
	err := s.retry(ctx, func() (err error) {
		return s.inTx(ctx, func(tx pgx.Tx) (err error) {
			if tag, err = tx.Exec(ctx, insertFirstSQL, args...); err != nil || tag.RowsAffected() != 1 {
				return err
			}
			return s.writeEvent(ctx, tx, rec.key, eventTypeOf(first.Status), first.Status)
		})
	})
	if err != nil {
		return "", false, fmt.Errorf("%w: apply install event: insert: %w", ErrDatabase, err)
	}
	if tag.RowsAffected() == 1 {
		s.eventCommitted(eventTypeOf(first.Status))
	}
	return outcome, tag.RowsAffected() == 1, nil
}

// applyExisting applies the event to an existing install under its row
// lock. found is false when there is no row.
func (s *Store) applyExisting(ctx context.Context, rec received, creds *sealed) (outcome Outcome, found bool, err error) {
	var event string
	err = s.retry(ctx, func() error {
		return s.inTx(ctx, func(tx pgx.Tx) (err error) {
			outcome, found, event, err = s.applyLocked(ctx, tx, rec, creds)
			return err
		})
	})
	if err != nil {
		return "", false, fmt.Errorf("%w: apply install event: %w", ErrDatabase, err)
	}
	if found && (outcome == OutcomeInstalled || outcome == OutcomeUninstalled) {
		s.changed(rec.key)
	}
	s.eventCommitted(event)
	return outcome, found, nil
}

// applyLocked locks the install's row, decides what the event does, and
// writes it, with its lifecycle event (the type returned) when it changed
// the install. found is false when there is no row.
func (s *Store) applyLocked(ctx context.Context, tx pgx.Tx, rec received, creds *sealed) (Outcome, bool, string, error) {
	rows, _ := tx.Query(ctx, lockInstallSQL, rec.key.IrisAppID, rec.key.AccountID)
	cur, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[installRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, "", nil
	}
	if err != nil {
		return "", false, "", fmt.Errorf("lock install: %w", err)
	}
	p := s.decide(rec, &cur, creds)
	// The write, the log entry and the notification share one round trip.
	b := &pgx.Batch{}
	if p.update != nil {
		b.Queue(updateInstallSQL, p.update.args(rec.key)...)
	}
	b.Queue(insertEventSQL, rec.eventArgs(p.outcome)...)
	if p.notify {
		b.Queue(notifySQL, ChannelInstallChanged, rec.key.notifyPayload())
		// The fleet's tokens of the replaced or erased credentials go with
		// them.
		b.Queue(deleteSharedTokensSQL, TokenKindInstall, InstallCredential(rec.key.IrisAppID, rec.key.AccountID))
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return "", true, "", err
	}
	if !p.notify { // a duplicate or stale delivery: no lifecycle event
		return p.outcome, true, "", nil
	}
	event := eventTypeOf(p.update.Status)
	if err := s.writeEvent(ctx, tx, rec.key, event, p.update.Status); err != nil {
		return "", true, "", err
	}
	return p.outcome, true, event, nil
}
