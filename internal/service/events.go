package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/api"
	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/events"
	"github.com/irisx-broker/irisx-broker/metrics"
	"github.com/irisx-broker/irisx-broker/store"
)

// eventStopTimeout is how long running webhook deliveries get to finish at
// shutdown; River cancels them after it (they are retried, never lost).
const eventStopTimeout = 15 * time.Second

// newEvents assembles the install lifecycle events: the River deliverer
// (hooked into st so every event's job is inserted in its transaction),
// the WatchEvents stream on the direct connection, and the API's view.
func newEvents(cfg *config.Config, directURL string, pool *pgxpool.Pool, st *store.Store, obs *metrics.EventObserver, log *slog.Logger) (*events.Deliverer, *api.EventsDeps, *events.Stream, error) {
	d, err := events.New(events.Config{
		Pool: pool, Store: st,
		WebhookURL: cfg.EventWebhookURL, WebhookSecret: cfg.EventWebhookSecret,
		Retention: cfg.EventRetention,
		// Behind a transaction pooler River cannot LISTEN on DATABASE_URL.
		PollOnly: directURL != cfg.DatabaseURL.Reveal(),
		Logger:   log, Observer: obs,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	st.SetEventEnqueuer(d.EnqueueTx())
	stream := events.NewStream(st, log)
	deps := &api.EventsDeps{Store: st, Watch: stream.Watch}
	if cfg.EventWebhookURL != "" {
		deps.Redeliver = d.Redeliver
	}
	return d, deps, stream, nil
}

// stopEvents lets running deliveries finish, for at most eventStopTimeout.
func stopEvents(d *events.Deliverer, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), eventStopTimeout)
	defer cancel()
	if err := d.Stop(ctx); err != nil {
		log.Warn("stopping event delivery", "error", err)
	}
}
