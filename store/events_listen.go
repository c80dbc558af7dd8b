package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// EventsListenApplicationName is the application_name of
// ListenEventWrites's connection.
const EventsListenApplicationName = "irisx-broker-events"

// ListenEventWrites LISTENs for ChannelEventsNumbered, which the sequencer
// sends once per batch of newly numbered events, on a dedicated connection
// to directURL (DATABASE_DIRECT_URL: a transaction pooler cannot LISTEN)
// and calls onWrite for each notification. connected(true) is called once
// LISTEN is in effect, connected(false) when the connection is lost; it
// reconnects with jittered backoff until ctx ends, when it returns nil.
// Callbacks run on its goroutine and must be quick.
func ListenEventWrites(ctx context.Context, directURL string, logger *slog.Logger, onWrite func(), connected func(bool)) error {
	// Read as the pool reads it, so pool_* settings in the URL are not sent
	// to Postgres as session parameters (which it refuses).
	pc, err := PoolConfig(directURL)
	if err != nil {
		return errors.New("store: listen events: database URL cannot be parsed")
	}
	cfg := pc.ConnConfig
	cfg.RuntimeParams["application_name"] = EventsListenApplicationName
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	backoff := listenMinBackoff
	for {
		ok, err := listenEventsOnce(ctx, cfg, onWrite, connected)
		connected(false)
		if ctx.Err() != nil {
			return nil
		}
		if ok {
			backoff = listenMinBackoff
		}
		logger.WarnContext(ctx, "event listener disconnected; reconnecting", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff/2 + rand.N(backoff/2)):
		}
		backoff = min(backoff*2, listenMaxBackoff)
	}
}

func listenEventsOnce(ctx context.Context, cfg *pgx.ConnConfig, onWrite func(), connected func(bool)) (bool, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ChannelEventsNumbered}.Sanitize()); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	connected(true)
	for {
		wctx, cancel := context.WithTimeout(ctx, listenIdleCheck)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			onWrite()
		case ctx.Err() != nil:
			return true, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			pctx, cancel := context.WithTimeout(ctx, listenPingLimit)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("ping: %w", err)
			}
		default:
			return true, fmt.Errorf("wait for notification: %w", err)
		}
	}
}
