package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/outbound"
	"github.com/irisx-broker/irisx-broker/store"
)

// Defaults of Config.
const (
	// DefaultMaxAge: an event is retried for this long, then given up.
	DefaultMaxAge = 24 * time.Hour
	// drainBudget: one job run starts no delivery after this, then
	// yields, so no job outlives its time-out (this plus the lease). River
	// hands a job a dead replica was running to another after the rescue
	// time (plus up to its 30 s rescuer interval).
	drainBudget       = 30 * time.Second
	sweepInterval     = 30 * time.Second
	retentionInterval = time.Hour
	retentionBatch    = 5000
	deliveryWorkers   = 32
	// fetchCooldown: River fetches at most this often, and each fetch takes
	// at most deliveryWorkers jobs, so together they bound deliveries per
	// second (most jobs are one event each, of a first install): 32 per
	// 20 ms is 1,600/s. A longer cooldown than 5 ms batches more jobs into
	// each fetch (River's JobGetAvailable costs Postgres about as much for
	// one job as for a dozen) and sends fewer insert NOTIFYs from the
	// callbacks' transactions, which River limits to one per cooldown; the
	// events phase of make bench measured the gain.
	fetchCooldown = 20 * time.Millisecond
)

// DefaultBackoff is the wait after the n-th failed attempt (n >= 1):
// 5 s, 30 s, 2 min, 10 min, 1 h, then hourly.
func DefaultBackoff(n int) time.Duration {
	steps := []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, time.Hour}
	if n < 1 {
		n = 1
	}
	if n > len(steps) {
		return time.Hour
	}
	return steps[n-1]
}

// Observer is told what deliveries do (metrics).
type Observer interface {
	EventDelivered(commitToDelivery time.Duration)
	EventRetried(reason string)
	EventGivenUp()
}

// Config configures a Deliverer.
type Config struct {
	// Pool is the pool River works through (DATABASE_URL's).
	Pool  *pgxpool.Pool
	Store *store.Store
	// WebhookURL and WebhookSecret: empty URL means events are written
	// but never delivered (EnqueueTx is then nil).
	WebhookURL    string
	WebhookSecret crypto.Secret
	// Retention: events older than this are deleted (zero: 168 h).
	Retention time.Duration
	// PollOnly: River polls instead of LISTENing, for DATABASE_URL behind a
	// transaction pooler.
	PollOnly bool
	// Optional.
	HTTPClient  *http.Client     // default outbound.New with AttemptTimeout
	Now         func() time.Time // delivery decisions and timestamps
	Logger      *slog.Logger
	Observer    Observer
	Backoff     func(failedAttempts int) time.Duration
	MaxAge      time.Duration
	RescueAfter time.Duration // River's RescueStuckJobsAfter
	// AttemptTimeout bounds one attempt (zero: 10 s; tests shorten it).
	AttemptTimeout time.Duration
	// Lease: how long a delivery holds its event (zero: attempt time-out
	// plus 20 s); DrainBudget: how long one job run starts deliveries
	// (zero: 30 s). Drills shorten both to rescue a killed replica's job
	// quickly.
	Lease, DrainBudget time.Duration
	// FetchPollInterval: River's poll interval (tests shorten it).
	FetchPollInterval time.Duration
}

// Deliverer runs the River client: the per-install delivery jobs, the
// sweeper that re-enqueues any install whose pending events have no job,
// and the retention job.
type Deliverer struct {
	cfg    Config
	st     *store.Store
	river  *river.Client[pgx.Tx]
	url    string
	signer *Signer
	http   *http.Client
	now    func() time.Time
	log    *slog.Logger
	obs    Observer
}

// New builds a Deliverer; Start runs it. With a webhook configured, pass
// d.EnqueueTx to store.SetEventEnqueuer before serving.
func New(cfg Config) (*Deliverer, error) {
	d := &Deliverer{cfg: cfg, st: cfg.Store, url: cfg.WebhookURL, http: cfg.HTTPClient, now: cfg.Now,
		log: cfg.Logger, obs: cfg.Observer}
	if d.now == nil {
		d.now = time.Now
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.obs == nil {
		d.obs = nopObserver{}
	}
	if d.cfg.Backoff == nil {
		d.cfg.Backoff = DefaultBackoff
	}
	if d.cfg.MaxAge == 0 {
		d.cfg.MaxAge = DefaultMaxAge
	}
	if d.cfg.Retention == 0 {
		d.cfg.Retention = 168 * time.Hour
	}
	if d.cfg.AttemptTimeout == 0 {
		d.cfg.AttemptTimeout = AttemptTimeout
	}
	if d.cfg.Lease == 0 {
		d.cfg.Lease = d.cfg.AttemptTimeout + 20*time.Second
	}
	if d.cfg.DrainBudget == 0 {
		d.cfg.DrainBudget = drainBudget
	}
	if d.cfg.FetchPollInterval != 0 {
		d.cfg.FetchPollInterval = max(d.cfg.FetchPollInterval, fetchCooldown)
	}
	jobTimeout := d.cfg.DrainBudget + d.cfg.Lease
	if d.cfg.RescueAfter == 0 {
		d.cfg.RescueAfter = jobTimeout + 30*time.Second
	}
	if d.url != "" {
		s, err := NewSigner(cfg.WebhookSecret)
		if err != nil {
			return nil, err
		}
		d.signer = s
		if d.http == nil {
			d.http = outbound.New(outbound.Options{Timeout: AttemptTimeout})
		} else {
			d.http = outbound.NoRedirects(d.http)
		}
	}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &deliverWorker{d: d}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &sweepWorker{d: d}); err != nil {
		return nil, err
	}
	if err := river.AddWorkerSafely(workers, &retentionWorker{d: d}); err != nil {
		return nil, err
	}
	// Both on every replica: River's leader enqueues them whatever its own
	// webhook setting (sweepArgs waits for a replica that has one).
	periodic := []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(retentionInterval),
			func() (river.JobArgs, *river.InsertOpts) { return retentionArgs{}, nil },
			&river.PeriodicJobOpts{ID: "irisx_event_retention", RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(sweepInterval),
			func() (river.JobArgs, *river.InsertOpts) { return sweepArgs{}, nil },
			&river.PeriodicJobOpts{ID: "irisx_event_sweep", RunOnStart: true}),
	}
	// River's own chatter (leadership, maintenance) stays below warn.
	riverLog := slog.New(levelFloor{d.log.Handler(), slog.LevelWarn})
	// The default queue runs the periodic jobs and any delivery job queued
	// there by an older release; deliveryQueue is worked only where a
	// webhook is configured.
	queues := map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}}
	if d.url != "" {
		queues[deliveryQueue] = river.QueueConfig{MaxWorkers: deliveryWorkers}
	}
	rc, err := river.NewClient(riverpgxv5.New(cfg.Pool), &river.Config{
		Queues:               queues,
		Workers:              workers,
		PeriodicJobs:         periodic,
		JobTimeout:           jobTimeout,
		RescueStuckJobsAfter: d.cfg.RescueAfter,
		PollOnly:             cfg.PollOnly,
		FetchCooldown:        fetchCooldown,
		FetchPollInterval:    d.cfg.FetchPollInterval,
		Logger:               riverLog,
		MaxAttempts:          1000,
	})
	if err != nil {
		return nil, fmt.Errorf("events: river client: %w", err)
	}
	d.river = rc
	return d, nil
}

// EnqueueTx is the store's EventEnqueuer when a webhook is configured,
// else nil: it inserts the install's delivery job in the event's
// transaction. The job is unique per install while available, scheduled,
// pending or running, so one job drains an install's events in order. A
// duplicate found waiting for a later retry is made available now, so a
// redelivered event does not wait out another event's backoff.
func (d *Deliverer) EnqueueTx() store.EventEnqueuer {
	if d.url == "" {
		return nil
	}
	return func(ctx context.Context, tx pgx.Tx, key store.InstallKey) error {
		res, err := d.river.InsertTx(ctx, tx, newDeliverArgs(key), nil)
		if err != nil {
			return err
		}
		if res.UniqueSkippedAsDuplicate && res.Job != nil && res.Job.State == rivertype.JobStateScheduled &&
			res.Job.ScheduledAt.After(time.Now().Add(time.Second)) {
			_, err = d.river.JobRetryTx(ctx, tx, res.Job.ID)
		}
		return err
	}
}

// Start starts River's producers and maintenance. It returns at once.
func (d *Deliverer) Start(ctx context.Context) error {
	if err := d.river.Start(ctx); err != nil {
		return fmt.Errorf("events: start river: %w", err)
	}
	return nil
}

// Stop waits for running deliveries to finish (or ctx to end, when it
// cancels them: their events stay leased until the lease ends and are
// then delivered again, at least once).
func (d *Deliverer) Stop(ctx context.Context) error {
	err := d.river.Stop(ctx)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return d.river.StopAndCancel(cctx)
	}
	return err
}

// Redeliver queues one more delivery of event seq.
func (d *Deliverer) Redeliver(ctx context.Context, seq int64) (store.LifecycleEvent, error) {
	return d.st.RedeliverEvent(ctx, seq, d.now())
}

type nopObserver struct{}

func (nopObserver) EventDelivered(time.Duration) {}
func (nopObserver) EventRetried(string)          {}
func (nopObserver) EventGivenUp()                {}

// levelFloor drops records below min.
type levelFloor struct {
	slog.Handler
	min slog.Level
}

func (h levelFloor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}
func (h levelFloor) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFloor{h.Handler.WithAttrs(a), h.min}
}
func (h levelFloor) WithGroup(n string) slog.Handler {
	return levelFloor{h.Handler.WithGroup(n), h.min}
}
