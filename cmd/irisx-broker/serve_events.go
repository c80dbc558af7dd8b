package main

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

// newEvents assembles the install lifecycle events: the River deliverer
// (hooked into st so every event's job is inserted in its transaction),
// the WatchEvents stream on the direct connection, and the API's view.
func newEvents(cfg *config.Config, pool *pgxpool.Pool, st *store.Store, obs *metrics.EventObserver, log *slog.Logger) (*events.Deliverer, *api.EventsDeps, *events.Stream, error) {
	direct := cfg.DatabaseDirectURL.Reveal()
	d, err := events.New(events.Config{
		Pool: pool, Store: st,
		WebhookURL: cfg.EventWebhookURL, WebhookSecret: cfg.EventWebhookSecret,
		Retention: cfg.EventRetention,
		// Behind a transaction pooler River cannot LISTEN on DATABASE_URL.
		PollOnly: direct != cfg.DatabaseURL.Reveal(),
		Logger:   log, Observer: obs,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	st.SetEventEnqueuer(d.EnqueueTx())
	stream := events.NewStream(st, direct, log)
	deps := &api.EventsDeps{Store: st, Watch: stream.Watch}
	if cfg.EventWebhookURL != "" {
		deps.Redeliver = d.Redeliver
	}
	return d, deps, stream, nil
}

// stopEvents lets running deliveries finish, for at most 15 s.
func stopEvents(d *events.Deliverer, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := d.Stop(ctx); err != nil {
		log.Warn("stopping event delivery", "error", err)
	}
}
