package events

import (
	"context"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/irisx-broker/irisx-broker/store"
	"github.com/jackc/pgx/v5"
)

// deliverArgs names the install whose pending events a job delivers.
type deliverArgs struct {
	IrisAppID string `json:"irisAppId"`
	AccountID string `json:"accountId"`
}

func newDeliverArgs(k store.InstallKey) deliverArgs {
	return deliverArgs{IrisAppID: k.IrisAppID, AccountID: k.AccountID}
}

func (deliverArgs) Kind() string { return "irisx_event_delivery" }

// deliveryQueue holds the delivery jobs. Only a replica with a webhook
// configured works it, so a replica without one (a mixed fleet, or one
// mid-rollout) never takes an install's job and drops its events.
const deliveryQueue = "irisx_event_delivery"

// waitingStates is River's minimal set of states for a unique job: one
// job of a kind (and args) waits or runs at a time.
var waitingStates = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning, rivertype.JobStateScheduled,
}

// InsertOpts: in deliveryQueue, unique per install in waitingStates. A
// job that failed on a database error (retryable) may meet a new one;
// River's scheduler then discards the later of the two.
func (deliverArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: deliveryQueue, UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: waitingStates}}
}

type deliverWorker struct {
	river.WorkerDefaults[deliverArgs]
	d *Deliverer
}

// NextRetry: a job fails only when the database does; try again soon.
func (w *deliverWorker) NextRetry(job *river.Job[deliverArgs]) time.Time {
	return time.Now().Add(min(time.Duration(job.Attempt)*time.Second, 30*time.Second))
}

// Work drains the install's pending events, oldest first, one at a time.
func (w *deliverWorker) Work(ctx context.Context, job *river.Job[deliverArgs]) error {
	d := w.d
	if d.url == "" {
		// A job of the default queue, queued before delivery had a queue
		// of its own: leave its events to the sweeper of a replica that
		// has a webhook, which queues the install again.
		return nil
	}
	key := store.InstallKey{IrisAppID: job.Args.IrisAppID, AccountID: job.Args.AccountID}
	complete := func(tx pgx.Tx) error {
		_, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job)
		return err
	}
	started := time.Now()
	for {
		if time.Since(started) > d.cfg.DrainBudget {
			return river.JobSnooze(0)
		}
		now := d.now()
		h, err := d.st.LeaseHeadEvent(ctx, key, now, d.cfg.Lease)
		if err != nil {
			return err
		}
		switch {
		case h.Idle:
			idle, err := d.st.FinishIfIdle(ctx, key, complete)
			if err != nil || idle {
				return err
			}
		case h.Unnumbered:
			// Sequence first: the head gets its id (its webhook-id) before
			// anything of this install is sent. This queues behind a batch
			// already running, for milliseconds.
			if err := d.st.NumberCommittedEvents(ctx); err != nil {
				return err
			}
		case h.Event == nil:
			return river.JobSnooze(max(h.Wait.Sub(now), 50*time.Millisecond))
		default:
			// After a delivery most installs (first installs) have nothing
			// more: record it and finish the job in one transaction.
			idle, err := d.deliver(ctx, key, h.Event, complete)
			if err != nil || idle {
				return err
			}
		}
	}
}

// deliver makes one attempt at ev (leased by us) and records its outcome;
// after a 2xx it also runs complete if the install has nothing more
// pending (idle).
func (d *Deliverer) deliver(ctx context.Context, key store.InstallKey, ev *store.LifecycleEvent, complete func(pgx.Tx) error) (idle bool, err error) {
	now := d.now()
	reason := d.post(ctx, ev, now)
	if ctx.Err() != nil {
		return false, ctx.Err() // stopping: the lease lapses and the event is retried
	}
	done := d.now()
	if reason == "" {
		idle, err := d.st.MarkDeliveredFinishIfIdle(ctx, key, ev.Seq, done, complete)
		if err != nil {
			return false, err
		}
		d.obs.EventDelivered(done.Sub(ev.OccurredAt))
		return idle, nil
	}
	return false, d.failed(ctx, ev, reason, done)
}

// failed records a failed attempt: a retry after the backoff, or the end.
func (d *Deliverer) failed(ctx context.Context, ev *store.LifecycleEvent, reason string, done time.Time) error {
	failed := ev.Attempts + 1
	if done.Sub(ev.RetrySince) >= d.cfg.MaxAge {
		d.log.WarnContext(ctx, "event webhook given up", "event_id", ev.ID(), "type", ev.Type,
			"attempts", failed, "reason", reason)
		if err := d.st.MarkEventGivenUp(ctx, ev.Seq, reason); err != nil {
			return err
		}
		d.obs.EventGivenUp()
		return nil
	}
	next := done.Add(d.cfg.Backoff(failed))
	d.log.InfoContext(ctx, "event webhook failed; will retry", "event_id", ev.ID(), "attempts", failed,
		"reason", reason, "next_attempt_at", next)
	if err := d.st.MarkEventFailed(ctx, ev.Seq, next, reason); err != nil {
		return err
	}
	d.obs.EventRetried(reason)
	return nil
}

// sweepArgs: the periodic job re-enqueuing installs whose due events have
// no job (their job was discarded, or the webhook was configured after
// they were written with another replica's settings). Every replica
// schedules it, since River's leader (whichever replica that is) enqueues
// periodic jobs; it waits in deliveryQueue, so only a replica with a
// webhook works it, and at most one waits: a fleet with no webhook at all
// holds one sweep job that never runs, rather than one delivery job per
// install with events.
type sweepArgs struct{}

func (sweepArgs) Kind() string { return "irisx_event_sweep" }

func (sweepArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: deliveryQueue, UniqueOpts: river.UniqueOpts{ByState: waitingStates}}
}

type sweepWorker struct {
	river.WorkerDefaults[sweepArgs]
	d *Deliverer
}

func (w *sweepWorker) Work(ctx context.Context, _ *river.Job[sweepArgs]) error {
	keys, err := w.d.st.PendingEventInstalls(ctx, w.d.now(), 1000)
	if err != nil || len(keys) == 0 {
		return err
	}
	params := make([]river.InsertManyParams, len(keys))
	for i, k := range keys {
		params[i] = river.InsertManyParams{Args: newDeliverArgs(k)}
	}
	_, err = w.d.river.InsertMany(ctx, params)
	return err
}

// retentionArgs: the periodic job deleting events past EVENT_RETENTION.
type retentionArgs struct{}

func (retentionArgs) Kind() string { return "irisx_event_retention" }

type retentionWorker struct {
	river.WorkerDefaults[retentionArgs]
	d *Deliverer
}

func (w *retentionWorker) Work(ctx context.Context, _ *river.Job[retentionArgs]) error {
	cutoff := w.d.now().Add(-w.d.cfg.Retention)
	for {
		n, err := w.d.st.DeleteEventsBefore(ctx, cutoff, retentionBatch)
		if err != nil || n < retentionBatch {
			if n > 0 {
				w.d.log.InfoContext(ctx, "deleted old events", "count", n)
			}
			return err
		}
	}
}
