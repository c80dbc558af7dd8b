package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The install lifecycle event types of the contract's EventService.
const (
	EventInstalled           = "install.installed"
	EventUninstalled         = "install.uninstalled"
	EventCredentialsRejected = "install.credentials_rejected"
)

// eventsLock is the transaction-level advisory lock that orders event ids
// by commit ("irisxevt" in ASCII).
const eventsLock int64 = 0x6972697378657674

// EventEnqueuer is called inside the transaction that writes an event of
// the install key, before the event row: the events package inserts the
// install's delivery job there (River's InsertTx), so the job exists
// exactly when the event does.
type EventEnqueuer func(ctx context.Context, tx pgx.Tx, key InstallKey) error

// SetEventEnqueuer makes every event written from now on pending webhook
// delivery, with fn enqueuing its delivery job in the event's transaction.
// Without it events are written with delivery state "none". Call it before
// the store is used concurrently.
func (s *Store) SetEventEnqueuer(fn EventEnqueuer) { s.enqueue = fn }

// WithEventObserver sets a function told of every committed event (its
// type), for metrics.
func WithEventObserver(fn func(eventType string)) Option {
	return func(s *Store) { s.eventWritten = fn }
}

// writeEventSQL assigns the id under eventsLock, which the transaction
// holds until it ends: a transaction taking the lock after us waits for
// our commit, so it draws a larger id and commits later. Plain nextval
// would not do: two transactions can commit in the opposite order of their
// nextval calls, and a reader that saw the larger id could later miss the
// smaller one. The lock is the last thing the transaction takes, so it is
// held only for this statement, the NOTIFY and the commit.
//
// No NOTIFY of its own: a NOTIFY serialises commits on Postgres's notify
// queue as well, which measured more than halved the rate of first
// installs. Watchers learn of events from ChannelInstallChanged (sent by
// every change but a first install) and a cheap per-replica poll of the
// latest id (see events.Stream).
const writeEventSQL = `WITH l AS (SELECT pg_advisory_xact_lock($1))
	INSERT INTO install_events_out
		(id, type, iris_app_id, account_id, status, occurred_at, retry_since, delivery_state, next_attempt_at)
	SELECT nextval('install_events_out_id_seq'), $2, $3, $4, $5, clock_timestamp(), clock_timestamp(), $6::text,
		CASE WHEN $6::text = 'pending' THEN clock_timestamp() END
	FROM l`

// writeEvent records an event of key in tx, enqueuing its delivery when a
// webhook is configured. It must be the last write of tx before commit.
func (s *Store) writeEvent(ctx context.Context, tx pgx.Tx, key InstallKey, typ string, status InstallStatus) error {
	state := "none"
	if s.enqueue != nil {
		state = "pending"
		if err := s.enqueue(ctx, tx, key); err != nil {
			return fmt.Errorf("enqueue event delivery: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, writeEventSQL, eventsLock, typ, key.IrisAppID, key.AccountID,
		string(status), state); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	return nil
}

// eventCommitted tells the observer, once the transaction committed.
func (s *Store) eventCommitted(typ string) {
	if s.eventWritten != nil && typ != "" {
		s.eventWritten(typ)
	}
}

// eventTypeOf is the event an applied change makes: none for a change
// that is not one of the contract's lifecycle events.
func eventTypeOf(status InstallStatus) string {
	switch status {
	case StatusInstalled:
		return EventInstalled
	case StatusUninstalled:
		return EventUninstalled
	case StatusCredentialsRejected:
		return EventCredentialsRejected
	}
	return ""
}

// eventIDPrefix starts every event id.
const eventIDPrefix = "evt_"

// FormatEventID is the public form of an event id: fixed width, so ids
// compare as strings in the order of their numbers.
func FormatEventID(id int64) string { return fmt.Sprintf("%s%019d", eventIDPrefix, id) }

// ParseEventID reverses FormatEventID; "" is 0 (before every event).
func ParseEventID(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	digits, ok := strings.CutPrefix(s, eventIDPrefix)
	if !ok || len(digits) != 19 || strings.Trim(digits, "0123456789") != "" {
		return 0, fmt.Errorf("%w: malformed event id", ErrInvalid)
	}
	id, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: malformed event id", ErrInvalid)
	}
	return id, nil
}
