package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// LifecycleEvent is one install lifecycle event with its webhook delivery
// state. It never holds a secret.
type LifecycleEvent struct {
	Seq            int64         `db:"id"`
	Type           string        `db:"type"`
	IrisAppID      string        `db:"iris_app_id"`
	AccountID      string        `db:"account_id"`
	Status         InstallStatus `db:"status"`
	OccurredAt     time.Time     `db:"occurred_at"`
	DeliveryState  string        `db:"delivery_state"`
	Attempts       int           `db:"attempts"`
	RetrySince     time.Time     `db:"retry_since"`
	FirstAttemptAt *time.Time    `db:"first_attempt_at"`
	NextAttemptAt  *time.Time    `db:"next_attempt_at"`
	LeasedUntil    *time.Time    `db:"leased_until"`
	DeliveredAt    *time.Time    `db:"delivered_at"`
	LastError      *string       `db:"last_error"`
}

// ID is the event's public id.
func (e *LifecycleEvent) ID() string { return FormatEventID(e.Seq) }

// Key is the event's install.
func (e *LifecycleEvent) Key() InstallKey {
	return InstallKey{IrisAppID: e.IrisAppID, AccountID: e.AccountID}
}

// Delivery states of a LifecycleEvent.
const (
	DeliveryNone      = "none"
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryGivenUp   = "given_up"
)

// lifecycleEventColumns reads install_events_out e; an event the sequencer
// has not numbered yet has Seq 0 (only LeaseHeadEvent meets one).
const lifecycleEventColumns = `coalesce(e.id, 0) AS id, type, iris_app_id, account_id::text, status, occurred_at,
	delivery_state, attempts, retry_since, first_attempt_at, next_attempt_at, leased_until, delivered_at, last_error`

// ListLifecycleEvents returns at most limit numbered events with an id
// above afterSeq, oldest first. Ids are assigned in commit order (see
// events_sequence.go), so a reader that has seen id n never later finds a
// smaller one: paging by id has no gaps. Events committed before the call
// are numbered first, so a caller reads its own writes.
func (s *Store) ListLifecycleEvents(ctx context.Context, afterSeq int64, limit int) ([]LifecycleEvent, error) {
	if err := s.numberBeforeRead(ctx); err != nil {
		return nil, err
	}
	return s.queryEvents(ctx, `SELECT `+lifecycleEventColumns+` FROM install_events_out e
		WHERE e.id > $1 ORDER BY e.id LIMIT $2`, afterSeq, limit)
}

// InstallLifecycleEvents returns an install's latest numbered events,
// newest first.
func (s *Store) InstallLifecycleEvents(ctx context.Context, irisAppID, accountID string, limit int) ([]LifecycleEvent, error) {
	key, err := installKey(irisAppID, accountID)
	if err != nil {
		return nil, err
	}
	if err := s.numberBeforeRead(ctx); err != nil {
		return nil, err
	}
	return s.queryEvents(ctx, `SELECT `+lifecycleEventColumns+` FROM install_events_out e
		WHERE iris_app_id = $1 AND account_id = $2 AND e.id IS NOT NULL ORDER BY e.id DESC LIMIT $3`,
		key.IrisAppID, key.AccountID, limit)
}

// numberBeforeRead numbers what is committed (NumberCommittedEvents). A
// sequencer holding the lock past the time-out only delays: the read goes
// ahead and the events appear on a later one.
func (s *Store) numberBeforeRead(ctx context.Context) error {
	err := s.NumberCommittedEvents(ctx)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.LockNotAvailable {
		return nil
	}
	return err
}

// LifecycleEvent returns one numbered event; ErrNotFound when there is none.
func (s *Store) LifecycleEvent(ctx context.Context, seq int64) (LifecycleEvent, error) {
	evs, err := s.queryEvents(ctx, `SELECT `+lifecycleEventColumns+` FROM install_events_out e WHERE e.id = $1`, seq)
	if err != nil {
		return LifecycleEvent{}, err
	}
	if len(evs) == 0 {
		return LifecycleEvent{}, fmt.Errorf("%w: no such event", ErrNotFound)
	}
	return evs[0], nil
}

// LatestEventSeq is the highest event id, 0 when there is none. Only
// numbered events have one.
func (s *Store) LatestEventSeq(ctx context.Context) (int64, error) {
	var seq int64
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM install_events_out`).Scan(&seq)
	})
	if err != nil {
		return 0, fmt.Errorf("store: latest event: %w", err)
	}
	return seq, nil
}

func (s *Store) queryEvents(ctx context.Context, sql string, args ...any) ([]LifecycleEvent, error) {
	var evs []LifecycleEvent
	err := s.retry(ctx, func() error {
		rows, _ := s.pool.Query(ctx, sql, args...)
		var err error
		evs, err = pgx.CollectRows(rows, pgx.RowToStructByName[LifecycleEvent])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: read events: %w", err)
	}
	for i := range evs {
		evs[i].OccurredAt = evs[i].OccurredAt.UTC()
	}
	return evs, nil
}
