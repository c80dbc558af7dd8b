package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listen backoff and liveness settings.
const (
	listenMinBackoff = 100 * time.Millisecond
	listenMaxBackoff = 5 * time.Second
	// listenIdleCheck: after this long without a notification the
	// connection is pinged, so a silently dead one (no RST, e.g. a network
	// partition) is noticed and replaced, and ListenerConfirmed stays
	// within ListenConfirmWindow of now while the connection is good.
	listenIdleCheck = 300 * time.Millisecond
	listenPingLimit = 500 * time.Millisecond
	// ListenConfirmWindow is how recent ListenerConfirmed must be for a
	// replica to trust that it would have heard of an install change.
	ListenConfirmWindow = time.Second
	// ListenApplicationName is the application_name of Listen's connection.
	ListenApplicationName = "irisx-broker-listen"
)

// Listen receives ChannelInstallChanged notifications on a dedicated
// connection and calls onChange for each (and, with SetEventsListener,
// ChannelEventsNumbered ones on the same connection). Because notifications sent while
// it is not connected are lost, onReset is called after every (re)connect,
// once LISTEN is in effect: the caller then drops whatever it cached. On a
// connection failure it reconnects with jittered exponential backoff
// (100 ms to 5 s), forever. The callbacks run on Listen's goroutine and
// should be quick. Listen returns nil when ctx ends.
//
// onLost, if not nil, is called with the cause each time a connection is
// lost or a reconnect fails, before the wait; the replica is then deaf to
// install changes until the next onReset.
func (s *Store) Listen(ctx context.Context, onChange func(irisAppID, accountID string), onReset func(), onLost func(error)) error {
	backoff := listenMinBackoff
	defer s.listenConfirmed.Store(0)
	for {
		connected, err := s.listenOnce(ctx, onChange, onReset)
		s.listenConfirmed.Store(0)
		if s.eventsListener != nil {
			s.eventsListener.EventsListening(false)
		}
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			backoff = listenMinBackoff // the last connection was good: retry promptly
		}
		if onLost != nil {
			onLost(err)
		}
		s.logger.WarnContext(ctx, "install change listener disconnected; reconnecting",
			"error", err, "retry_in", backoff)
		// Full jitter in [backoff/2, backoff) keeps replicas from reconnecting in lockstep.
		wait := backoff/2 + rand.N(backoff/2)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, listenMaxBackoff)
	}
}

// listenOnce runs one connection until it fails or ctx ends. connected
// reports whether LISTEN took effect.
func (s *Store) listenOnce(ctx context.Context, onChange func(irisAppID, accountID string), onReset func()) (connected bool, err error) {
	if s.listenConfigErr {
		return false, errors.New("connect: DATABASE_DIRECT_URL cannot be parsed")
	}
	cfg := s.pool.Config().ConnConfig // a copy
	if s.listenConfig != nil {
		cfg = s.listenConfig.Copy()
	}
	cfg.RuntimeParams["application_name"] = ListenApplicationName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	listen := "LISTEN " + pgx.Identifier{ChannelInstallChanged}.Sanitize()
	if s.eventsListener != nil {
		listen += "; LISTEN " + pgx.Identifier{ChannelEventsNumbered}.Sanitize()
	}
	if _, err := conn.Exec(ctx, listen); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	s.confirm()
	onReset()
	if s.eventsListener != nil {
		s.eventsListener.EventsListening(true)
	}
	for {
		waitCtx, cancel := context.WithTimeout(ctx, listenIdleCheck)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil && n.Channel == ChannelEventsNumbered:
			s.confirm()
			s.eventsListener.EventsNumbered()
		case err == nil:
			s.confirm()
			var p changePayload
			if json.Unmarshal([]byte(n.Payload), &p) != nil || p.IrisAppID == "" || p.AccountID == "" {
				// Unknown payload: we cannot tell what changed, so treat it
				// like a missed notification.
				onReset()
				continue
			}
			onChange(p.IrisAppID, p.AccountID)
		case ctx.Err() != nil:
			return true, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			// Idle for listenIdleCheck: prove the connection is alive.
			pingCtx, cancel := context.WithTimeout(ctx, listenPingLimit)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("ping: %w", err)
			}
			s.confirm()
		default:
			return true, fmt.Errorf("wait for notification: %w", err)
		}
	}
}

func (s *Store) confirm() { s.listenConfirmed.Store(time.Now().UnixNano()) }

// ListenerConfirmed reports whether Listen's connection proved alive
// within ListenConfirmWindow: a notification, a ping or the connect. While
// it is false this replica may have missed an install change.
func (s *Store) ListenerConfirmed() bool {
	at := s.listenConfirmed.Load()
	return at != 0 && time.Since(time.Unix(0, at)) <= ListenConfirmWindow
}
