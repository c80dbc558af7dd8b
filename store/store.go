// Package store is the Postgres repository (pgx/v5) and the only package
// that speaks SQL. It owns the installs and their event log and the API
// users with their shared tokens, seals and opens stored secrets through
// crypto (and re-encrypts them on key rotation), announces install changes
// with LISTEN/NOTIFY, and applies the embedded migrations.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// Pool defaults applied by Open unless the URL sets them
// (pool_max_conns=..., connect_timeout=..., application_name=...).
const (
	defaultMaxConns       = 16
	defaultConnectTimeout = 5 * time.Second
	applicationName       = "irisx-broker"
)

// OpenWith creates a connection pool for databaseURL. It does not connect:
// the first use does, so a database that is down at start is not fatal
// here. configure, if not nil, adjusts the parsed configuration before the
// defaults below fill what the URL left unset (the assembly sets the tracer).
func OpenWith(ctx context.Context, databaseURL string, configure func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	cfg, err := PoolConfig(databaseURL) // no server-side prepared statements: see PoolConfig
	if err != nil {
		return nil, err
	}
	if configure != nil {
		configure(cfg)
	}
	if !strings.Contains(databaseURL, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	cfg.MaxConnIdleTime = 5 * time.Minute
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = applicationName
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: create pool: %w", err)
	}
	return pool, nil
}

// Store is the repository. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	keys   *crypto.Keyring
	now    func() time.Time
	logger *slog.Logger
	// maxConns bounds retry: one more attempt than the pool holds
	// connections always reaches a fresh one.
	maxConns int
	// pageKey authenticates page tokens (install_read.go).
	pageKeyOnce sync.Once
	pageKey     []byte

	onChange        changeHook
	listenConfig    *pgx.ConnConfig // nil: the pool's
	listenConfigErr bool
	// listenConfirmed is when (unix ns) Listen last proved its connection
	// alive; zero while it is not connected.
	listenConfirmed atomic.Int64
	// eventsListener: see SetEventsListener.
	eventsListener EventsListener
	// enqueue and eventWritten: see SetEventEnqueuer, WithEventObserver.
	enqueue      EventEnqueuer
	eventWritten func(eventType string)
	eventNudge   chan struct{} // see EventsCommitted
	// profileWrites counts identity profiles written per verdict
	// (accepted, refused), so one insert in profilePruneEvery prunes.
	profileWrites [2]atomic.Int64
}

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock used for updated_at and for events without a
// time of their own; tests pass a fake one.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithLogger sets the logger for background work (Listen's reconnects).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.logger = l } }

// New returns a Store over pool that seals secrets with keys.
func New(pool *pgxpool.Pool, keys *crypto.Keyring, opts ...Option) *Store {
	s := &Store{pool: pool, keys: keys, now: time.Now, logger: slog.New(slog.DiscardHandler),
		maxConns: int(pool.Config().MaxConns), eventNudge: make(chan struct{}, 1)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("%w: ping: %w", ErrDatabase, err)
	}
	return nil
}

// inTx runs fn in a transaction, committing when fn returns nil.
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// A no-op after Commit. With ctx already done pgx closes the connection
	// instead, which ends the transaction server-side just the same.
	defer func() { _ = tx.Rollback(ctx) }()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// retry runs fn again while it fails because its pooled connection turned
// out to be dead: after a database restart or a network cut every idle
// connection in the pool fails its next use, and without this each would
// fail one request. pgx drops such a connection, so the next attempt gets
// another or a fresh one; maxConns+1 attempts always reach a fresh one,
// whose failure to connect ends the retries.
//
// It also runs fn again after a stale prepared statement (stalePlan), which
// pgx then forgets on that connection, so the next use prepares it anew.
//
// Repeating is safe because every store operation is idempotent: when the
// lost reply was for a committed change, the repeat finds the change made
// and answers as a duplicate delivery does.
func (s *Store) retry(ctx context.Context, fn func() error) error {
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || !(connLost(err) || stalePlan(err)) || attempt >= s.maxConns || ctx.Err() != nil {
			return err
		}
	}
}

// stalePlan reports Postgres refusing a statement a connection prepared
// before a migration changed the columns it returns (River's statements
// return river_job.*): with a direct DATABASE_URL the pool keeps prepared
// statements (see PoolConfig), and an old replica meets this once per
// connection after a rolling upgrade's migration.
func stalePlan(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.FeatureNotSupported &&
		strings.Contains(pgErr.Message, "cached plan must not change result type")
}

// connLost reports whether err is the failure of an established
// connection, as opposed to an error reported by the server, a failure to
// connect at all (the database is down: retrying cannot help), or the
// caller's deadline.
func connLost(err error) bool {
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow:
			return true // the server is ending this session
		}
		return false
	}
	return pgconn.SafeToRetry(err) || isNetOrEOF(err)
}

func isNetOrEOF(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// nowUTC is the store's clock at the precision Postgres keeps.
func (s *Store) nowUTC() time.Time { return pgTime(s.now()) }

// pgTime truncates to microseconds, as Postgres stores times, so a time
// compared in Go equals the one read back.
func pgTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
