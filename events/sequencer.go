package events

import (
	"context"
	"log/slog"
	"time"

	"github.com/irisx-broker/irisx-broker/store"
)

const (
	// sequencePoll: how often a replica probes for events committed on
	// other replicas (one index probe; its own commits nudge it at once).
	sequencePoll = 25 * time.Millisecond
	// sequenceBusyWait and sequenceBusyTries: another replica's batch is
	// running and may have begun before our commit; look again soon rather
	// than at the next poll.
	sequenceBusyWait  = 5 * time.Millisecond
	sequenceBusyTries = 20
	// sequenceGap: the least time between two rounds of one replica, so
	// under load a batch gathers the commits of a few milliseconds instead
	// of one transaction (and one WAL flush) per commit.
	sequenceGap = 20 * time.Millisecond
)

// Sequencer gives committed events their public ids (store.NumberEvents,
// where the design is explained). Every replica runs one; the fleet-wide
// lock lets one batch run at a time, so more replicas only mean more
// probes. It wakes on its own store's commits (store.EventsCommitted) and
// polls for other replicas'.
type Sequencer struct {
	st      *store.Store
	log     *slog.Logger
	onBatch func()
}

// NewSequencer returns a Sequencer numbering st's events; onBatch (may be
// nil) is called after each batch it commits, to wake local watchers
// without waiting for the batch's NOTIFY.
func NewSequencer(st *store.Store, logger *slog.Logger, onBatch func()) *Sequencer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Sequencer{st: st, log: logger, onBatch: onBatch}
}

// Run numbers events until ctx ends.
func (q *Sequencer) Run(ctx context.Context) {
	t := time.NewTicker(sequencePoll)
	defer t.Stop()
	failing := false
	for {
		err := q.round(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			q.log.WarnContext(ctx, "numbering events failed; retrying", "error", err)
			failing = true
		case err == nil && failing:
			q.log.InfoContext(ctx, "numbering events again")
			failing = false
		}
		gap := time.NewTimer(sequenceGap)
		select {
		case <-ctx.Done():
			gap.Stop()
			return
		case <-gap.C:
		}
		select {
		case <-ctx.Done():
			return
		case <-q.st.EventsCommitted():
		case <-t.C:
		}
	}
}

// round numbers what is committed: batches until none is full, waiting
// briefly while another replica's batch runs.
func (q *Sequencer) round(ctx context.Context) error {
	for busy := 0; busy < sequenceBusyTries; {
		res, err := q.st.NumberEvents(ctx, false)
		if err != nil {
			return err
		}
		if res.Count > 0 && q.onBatch != nil {
			q.onBatch()
		}
		switch {
		case res.More:
		case res.Busy:
			busy++
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(sequenceBusyWait):
			}
		default:
			return nil
		}
	}
	return nil
}
