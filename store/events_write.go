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

// writeEventSQL inserts the event with a staging number (the column's
// default, a plain sequence) and no public id: no lock is taken, so
// event-writing transactions commit in parallel. The sequencer
// (events_sequence.go) numbers it once it is committed; until then no
// reader sees it.
const writeEventSQL = `INSERT INTO install_events_out
		(type, iris_app_id, account_id, status, occurred_at, retry_since, delivery_state, next_attempt_at)
	VALUES ($1, $2, $3, $4, clock_timestamp(), clock_timestamp(), $5::text,
		CASE WHEN $5::text = 'pending' THEN clock_timestamp() END)`

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
	if _, err := tx.Exec(ctx, writeEventSQL, typ, key.IrisAppID, key.AccountID,
		string(status), state); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	return nil
}

// eventCommitted tells the observer, once the transaction committed, and
// nudges the sequencer of this process (EventsCommitted).
func (s *Store) eventCommitted(typ string) {
	if typ == "" {
		return
	}
	if s.eventWritten != nil {
		s.eventWritten(typ)
	}
	select {
	case s.eventNudge <- struct{}{}:
	default: // a nudge is already waiting; it covers this commit too
	}
}

// EventsCommitted receives after a transaction of this Store that wrote
// an event commits, so the process's sequencer numbers it at once rather
// than at its next poll. Nudges coalesce: one receive may stand for many
// commits.
func (s *Store) EventsCommitted() <-chan struct{} { return s.eventNudge }

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
