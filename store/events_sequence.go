package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// Event ids are assigned after commit, not by the writer.
//
// A writer inserts its event with a staging number from a plain sequence
// and no public id (writeEventSQL), taking no lock, so event-writing
// transactions commit in parallel. The sequencer, any replica's but one at
// a time fleet-wide (eventsLock, held for its short transaction), numbers
// every committed but unnumbered event in one batch, in staging order, and
// commits. Readers see numbered events only.
//
// Why this keeps "ids sort in commit order" and "a reader that has seen id
// n never later finds a smaller one": batches are serialised by the lock,
// which Postgres releases only after the batch's commit is visible, and
// each batch's statements start after it took the lock. So a batch sees
// every earlier batch's ids and draws larger ones, and an event committed
// before a batch began is numbered by it or by an earlier one: events
// committed before a batch sort before the events of every later batch.
// A reader that sees id n sees n's batch whole and every earlier batch.
// Within a batch, staging order stands in for commit order. An install's
// events are written under its row lock, so for one install staging order
// is commit order exactly, which per-install delivery relies on.
//
// An aborted writer's staging number simply never appears (no hole
// blocks anyone), and a sequencer transaction that fails leaves its events
// unnumbered for the next batch; the ids it drew are skipped. Plain
// nextval in the writer would not do: two transactions can commit in the
// opposite order of their nextval calls, so a reader that saw the larger
// id could later miss the smaller one. Drawing the id under the lock in
// the writer (the previous design) does do, but serialises every
// event-writing commit fleet-wide, one WAL flush each.

// eventsLock is the transaction-level advisory lock the sequencer holds
// ("irisxevt" in ASCII). The previous release's writers take the same lock
// to draw their ids, so during a rolling deploy both kinds of numbering are
// ordered against each other.
const eventsLock int64 = 0x6972697378657674

// ChannelEventsNumbered is the NOTIFY channel the sequencer sends on once
// per batch (payload: the batch's largest id), so watchers on every replica
// learn of new events at once.
const ChannelEventsNumbered = "irisx_events_numbered"

// sequenceBatch bounds one batch, so a backlog is numbered in several
// short transactions rather than one long one.
const sequenceBatch = 5000

// Numbered is what one NumberEvents call did.
type Numbered struct {
	// Count events got ids; LastSeq is the largest (0 when Count is 0).
	Count   int
	LastSeq int64
	// Busy: another sequencer held the lock, so nothing was done. Its batch
	// may have begun before the latest commits: try again shortly.
	Busy bool
	// More: the batch was full; more events may be waiting.
	More bool
}

// NumberEvents gives ids to committed events that have none, oldest
// staging first, at most sequenceBatch of them, in one transaction that
// also NOTIFYs ChannelEventsNumbered. With wait false it gives up at once
// (Busy) when another sequencer holds the lock; with wait true it queues
// for the lock (bounded by a lock time-out), so every event committed
// before the call is numbered when it returns without More. A cheap probe
// of the unnumbered index comes first, so an idle call starts no
// transaction.
func (s *Store) NumberEvents(ctx context.Context, wait bool) (Numbered, error) {
	var res Numbered
	err := s.retry(ctx, func() error {
		res = Numbered{}
		var waiting bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM install_events_out WHERE id IS NULL)`).
			Scan(&waiting); err != nil || !waiting {
			return err
		}
		return s.inTx(ctx, func(tx pgx.Tx) error {
			var err error
			res, err = numberBatch(ctx, tx, wait)
			return err
		})
	})
	if err != nil {
		return Numbered{}, fmt.Errorf("store: number events: %w", err)
	}
	return res, nil
}

// numberBatch is NumberEvents's transaction.
func numberBatch(ctx context.Context, tx pgx.Tx, wait bool) (Numbered, error) {
	// The lock is a statement of its own: the statements after it take
	// their snapshots once it is held, so they see the previous batch.
	if wait {
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '2s'`); err != nil {
			return Numbered{}, err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, eventsLock); err != nil {
			return Numbered{}, err
		}
	} else {
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, eventsLock).Scan(&locked); err != nil {
			return Numbered{}, err
		}
		if !locked {
			return Numbered{Busy: true}, nil
		}
	}
	// The staging numbers and as many fresh ids; both are sorted here, so
	// the order in which Postgres evaluates nextval does not matter.
	rows, _ := tx.Query(ctx, `SELECT staging, nextval('install_events_out_id_seq') FROM (
		SELECT staging FROM install_events_out WHERE id IS NULL ORDER BY staging LIMIT $1) t`, sequenceBatch)
	var staging, ids []int64
	var st, id int64
	if _, err := pgx.ForEachRow(rows, []any{&st, &id}, func() error {
		staging, ids = append(staging, st), append(ids, id)
		return nil
	}); err != nil || len(staging) == 0 {
		return Numbered{}, err
	}
	slices.Sort(staging)
	slices.Sort(ids)
	last := ids[len(ids)-1]
	b := &pgx.Batch{}
	b.Queue(`UPDATE install_events_out e SET id = v.id
		FROM unnest($1::bigint[], $2::bigint[]) AS v(staging, id)
		WHERE e.staging = v.staging AND e.id IS NULL`, staging, ids)
	b.Queue(`SELECT pg_notify($1, $2)`, ChannelEventsNumbered, strconv.FormatInt(last, 10))
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return Numbered{}, err
	}
	return Numbered{Count: len(ids), LastSeq: last, More: len(ids) == sequenceBatch}, nil
}

// NumberCommittedEvents numbers every event committed before the call,
// queueing behind a running sequencer if need be. Readers call it first,
// so a caller reads its own writes without waiting for the sequencer's
// next round; with nothing unnumbered it costs one index probe.
func (s *Store) NumberCommittedEvents(ctx context.Context) error {
	for {
		res, err := s.NumberEvents(ctx, true)
		if err != nil || !res.More {
			return err
		}
	}
}
