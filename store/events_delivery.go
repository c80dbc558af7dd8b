package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrEventDeliveryOff means no webhook is configured, so an event cannot be
// queued for delivery.
var ErrEventDeliveryOff = fmt.Errorf("%w: no EVENT_WEBHOOK_URL is configured", ErrInvalid)

// Head is the first undelivered event of an install, as LeaseHeadEvent
// found it.
type Head struct {
	// Event is set when the caller now holds its delivery lease.
	Event *LifecycleEvent
	// Wait, when Event is nil and Idle false, is when to look again: the
	// head's next attempt, or the end of another worker's lease.
	Wait time.Time
	// Idle: the install has no undelivered event.
	Idle bool
	// Unnumbered: the head is committed but has no id yet; number it
	// (NumberEvents) and look again. Its successors wait behind it.
	Unnumbered bool
}

// leaseHeadSQL locks the install's oldest pending event ($1, $2) and, if
// it is numbered, due at $3 and not leased by anyone else, leases it until
// $4, all in one statement. It returns the head as it was locked (the
// newest committed version, not the statement's snapshot) and whether it
// is now ours. The commit is asynchronous (see finishDelivery):
// set_config is evaluated for the head row, before the statement's
// implicit transaction commits.
const leaseHeadSQL = `WITH head AS (
		SELECT ` + lifecycleEventColumns + `, e.staging,
			set_config('synchronous_commit', 'off', true) AS async
		FROM install_events_out e
		WHERE iris_app_id = $1 AND account_id = $2 AND delivery_state = 'pending'
		ORDER BY staging LIMIT 1 FOR UPDATE
	), leased AS (
		UPDATE install_events_out e SET leased_until = $4, first_attempt_at = coalesce(e.first_attempt_at, $3)
		FROM head h
		WHERE e.staging = h.staging AND h.id <> 0
			AND (h.leased_until IS NULL OR h.leased_until <= $3)
			AND (h.next_attempt_at IS NULL OR h.next_attempt_at <= $3)
		RETURNING e.first_attempt_at, e.leased_until
	)
	SELECT h.id, h.type, h.iris_app_id, h.account_id, h.status, h.occurred_at, h.delivery_state, h.attempts,
		h.retry_since, coalesce(l.first_attempt_at, h.first_attempt_at) AS first_attempt_at, h.next_attempt_at,
		coalesce(l.leased_until, h.leased_until) AS leased_until, h.delivered_at, h.last_error,
		l.leased_until IS NOT NULL AS leased
	FROM head h LEFT JOIN leased l ON true`

// leasedHead is a row of leaseHeadSQL.
type leasedHead struct {
	LifecycleEvent
	Leased bool `db:"leased"`
}

// LeaseHeadEvent finds the install's oldest pending event (by staging,
// which for one install is commit order and id order) and, if it is
// numbered, due and nobody else is delivering it, leases it until
// now+lease. Only the head can be leased, so an install's events are
// delivered in id order: a later one waits until the earlier one is
// delivered or given up. It is one statement (one round trip, no
// transaction of its own), as it runs once per delivery.
func (s *Store) LeaseHeadEvent(ctx context.Context, key InstallKey, now time.Time, lease time.Duration) (Head, error) {
	now = pgTime(now)
	var h Head
	err := s.retry(ctx, func() error {
		h = Head{}
		rows, _ := s.pool.Query(ctx, leaseHeadSQL, key.IrisAppID, key.AccountID, now, now.Add(lease))
		row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[leasedHead])
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			h.Idle = true
			return nil
		case err != nil:
			return err
		case row.Leased:
			ev := row.LifecycleEvent
			ev.OccurredAt = ev.OccurredAt.UTC()
			h.Event = &ev
		case row.Seq == 0: // committed, not numbered yet: it has no webhook-id
			h.Unnumbered = true
		case row.LeasedUntil != nil && row.LeasedUntil.After(now):
			h.Wait = *row.LeasedUntil
		case row.NextAttemptAt != nil:
			h.Wait = *row.NextAttemptAt
		default:
			return fmt.Errorf("event %d neither leased nor waiting", row.Seq)
		}
		return nil
	})
	if err != nil {
		return Head{}, fmt.Errorf("store: lease event: %w", err)
	}
	return h, nil
}

const markDeliveredSQL = `UPDATE install_events_out SET
		delivery_state = 'delivered', delivered_at = $2, attempts = attempts + 1,
		leased_until = NULL, next_attempt_at = NULL, last_error = NULL
		WHERE id = $1 AND delivery_state = 'pending'`

// MarkEventFailed records a failed attempt: the next one is due at next.
func (s *Store) MarkEventFailed(ctx context.Context, seq int64, next time.Time, lastError string) error {
	return s.execEvent(ctx, "mark event failed", `UPDATE install_events_out SET
		attempts = attempts + 1, next_attempt_at = $2, leased_until = NULL, last_error = $3
		WHERE id = $1 AND delivery_state = 'pending'`, seq, pgTime(next), clean(lastError, maxLastErrorLen))
}

// MarkEventGivenUp records a failed last attempt: the event is no longer
// delivered, and the install's next event becomes the head.
func (s *Store) MarkEventGivenUp(ctx context.Context, seq int64, lastError string) error {
	return s.execEvent(ctx, "give up event", `UPDATE install_events_out SET
		delivery_state = 'given_up', attempts = attempts + 1, next_attempt_at = NULL,
		leased_until = NULL, last_error = $2
		WHERE id = $1 AND delivery_state = 'pending'`, seq, clean(lastError, maxLastErrorLen))
}

func (s *Store) execEvent(ctx context.Context, what, sql string, args ...any) error {
	err := s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, sql, args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: %s: %w", what, err)
	}
	return nil
}

// FinishIfIdle runs fn (which completes the install's delivery job) in a
// transaction that first share-locks the install's row and then finds no
// pending event. Every event writer holds that row lock (FOR UPDATE or an
// UPDATE) while it inserts its job, so an event is either visible here, or
// its writer runs after fn committed and finds no job to be a duplicate
// of: no event is left without a job. idle is false when an event is
// pending; fn then did not run.
func (s *Store) FinishIfIdle(ctx context.Context, key InstallKey, fn func(tx pgx.Tx) error) (idle bool, err error) {
	return s.finishDelivery(ctx, key, 0, time.Time{}, fn)
}

// MarkDeliveredFinishIfIdle is MarkEventDelivered and FinishIfIdle in one
// transaction: after the last pending event of an install (a first
// install's only one) the job ends with one commit instead of two.
func (s *Store) MarkDeliveredFinishIfIdle(ctx context.Context, key InstallKey, seq int64, at time.Time, fn func(tx pgx.Tx) error) (idle bool, err error) {
	return s.finishDelivery(ctx, key, seq, at, fn)
}

// finishDelivery marks event seq delivered (unless seq is 0) and runs fn
// if nothing of key is left pending.
//
// Its commit is asynchronous (synchronous_commit off), as is the lease's:
// a Postgres crash may lose the last few hundred milliseconds of them,
// which only sends those events again with the same webhook-id (delivery
// is at least once) or runs a job again that then finds nothing to do. It
// saves a WAL flush per delivery that the callbacks' commits would wait
// behind. Events and their ids are never written this way.
func (s *Store) finishDelivery(ctx context.Context, key InstallKey, seq int64, at time.Time, fn func(tx pgx.Tx) error) (idle bool, err error) {
	err = s.retry(ctx, func() error {
		idle = false
		return s.inTx(ctx, func(tx pgx.Tx) error {
			// One round trip. The EXISTS is a statement of its own: it
			// takes its snapshot once the row lock is held, so it sees the
			// event of a writer that held the lock before us.
			b := &pgx.Batch{}
			b.Queue(finishDeliverySQL, seq, pgTime(at), key.IrisAppID, key.AccountID)
			var pending bool
			b.Queue(`SELECT EXISTS (SELECT 1 FROM install_events_out
				WHERE iris_app_id = $1 AND account_id = $2 AND delivery_state = 'pending')`,
				key.IrisAppID, key.AccountID).QueryRow(func(r pgx.Row) error { return r.Scan(&pending) })
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
			if pending {
				return nil
			}
			idle = true
			return fn(tx)
		})
	})
	if err != nil {
		return false, fmt.Errorf("store: finish event delivery: %w", err)
	}
	return idle, nil
}

// finishDeliverySQL marks event $1 delivered at $2 (none when $1 is 0),
// share-locks the install's row ($3, $4) and makes the transaction's
// commit asynchronous, in one statement.
const finishDeliverySQL = `WITH delivered AS (` + markDeliveredSQL + `)
	SELECT set_config('synchronous_commit', 'off', true) FROM installs
	WHERE iris_app_id = $3 AND account_id = $4 FOR SHARE OF installs`

// RedeliverEvent queues a delivered, given-up or never-delivered event for
// one more delivery (attempts start over), enqueuing its install's job in
// the same transaction. An event already pending is left as it is.
func (s *Store) RedeliverEvent(ctx context.Context, seq int64, now time.Time) (LifecycleEvent, error) {
	if s.enqueue == nil {
		return LifecycleEvent{}, ErrEventDeliveryOff
	}
	ev, err := s.LifecycleEvent(ctx, seq)
	if err != nil {
		return LifecycleEvent{}, err
	}
	if ev.DeliveryState == DeliveryPending {
		return ev, nil
	}
	key := ev.Key()
	err = s.retry(ctx, func() error {
		return s.inTx(ctx, func(tx pgx.Tx) error {
			// The row lock, as for every event writer (see FinishIfIdle).
			if _, err := tx.Exec(ctx, `SELECT 1 FROM installs WHERE iris_app_id = $1 AND account_id = $2 FOR UPDATE`,
				key.IrisAppID, key.AccountID); err != nil {
				return err
			}
			if err := s.enqueue(ctx, tx, key); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE install_events_out SET delivery_state = 'pending', attempts = 0,
				retry_since = $2, first_attempt_at = NULL, next_attempt_at = $2, leased_until = NULL, delivered_at = NULL,
				last_error = NULL WHERE id = $1`, seq, pgTime(now))
			return err
		})
	})
	if err != nil {
		return LifecycleEvent{}, fmt.Errorf("store: redeliver event: %w", err)
	}
	return s.LifecycleEvent(ctx, seq)
}

// PendingEventInstalls lists installs (at most limit) whose head event is
// due and not leased at now, for the sweeper that re-enqueues lost jobs.
func (s *Store) PendingEventInstalls(ctx context.Context, now time.Time, limit int) ([]InstallKey, error) {
	var keys []InstallKey
	err := s.retry(ctx, func() error {
		rows, _ := s.pool.Query(ctx, `SELECT DISTINCT iris_app_id, account_id::text FROM install_events_out
			WHERE delivery_state = 'pending' AND next_attempt_at <= $1
				AND (leased_until IS NULL OR leased_until <= $1)
			LIMIT $2`, pgTime(now), limit)
		var err error
		keys, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (InstallKey, error) {
			var k InstallKey
			err := r.Scan(&k.IrisAppID, &k.AccountID)
			return k, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: pending event installs: %w", err)
	}
	return keys, nil
}

// DeleteEventsBefore deletes at most limit events that occurred before
// cutoff and are not waiting for delivery, returning how many it deleted.
func (s *Store) DeleteEventsBefore(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	var n int64
	err := s.retry(ctx, func() error {
		tag, err := s.pool.Exec(ctx, `DELETE FROM install_events_out WHERE staging IN (
			SELECT staging FROM install_events_out WHERE occurred_at < $1 AND delivery_state <> 'pending'
				AND id IS NOT NULL
			ORDER BY staging LIMIT $2)`, pgTime(cutoff), limit)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: delete old events: %w", err)
	}
	return n, nil
}
