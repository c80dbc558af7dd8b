package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers the pgx5:// driver
	"github.com/golang-migrate/migrate/v4/source"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/migrations"
)

// MigrateApplicationName is the application_name of the migration
// connection, so pg_stat_activity shows who holds or waits for the lock.
const MigrateApplicationName = "irisx-broker-migrate"

// lockWaitNotice is how long Migrate waits for the lock before saying so.
const lockWaitNotice = time.Second

// MigrateResult is what Migrate found and did, for the caller to log.
type MigrateResult struct {
	// From is the schema version found (0: an empty database), To the
	// version left; they are equal when nothing was pending.
	From, To uint
	// Latest is the newest migration this binary embeds.
	Latest uint
	// LockWait is how long the migration lock took to get.
	LockWait time.Duration
}

// Applied is how many migrations this call applied.
func (r MigrateResult) Applied() uint { return r.To - r.From }

// Newer reports that the database was migrated by a newer binary. Under
// the expand-then-contract policy (migrations/README.md) this binary still
// works on that schema, so it is a warning to log, not an error.
func (r MigrateResult) Newer() bool { return r.From > r.Latest }

// Migrate applies every pending embedded migration, in one transaction,
// under a transaction-scoped advisory lock, on one dedicated connection
// (application_name irisx-broker-migrate). Concurrent starts therefore
// migrate once; and because nothing outlives the transaction it works
// through PgBouncer in transaction mode as well as directly. The lock is
// golang-migrate's own key, so it also excludes an older binary (or
// `migrate down`) holding golang-migrate's session lock.
//
// Waiting for the lock is logged after a second and ends as soon as ctx
// does (SIGTERM). A failed or cancelled
// migration rolls back whole and leaves the schema as it was, never
// dirty. A schema newer than this binary's migrations is reported in the
// result (Newer), not as an error. A nil logger logs nothing.
func Migrate(ctx context.Context, databaseURL string, logger *slog.Logger) (MigrateResult, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	res := MigrateResult{}
	ups, err := embeddedUps()
	if err != nil {
		return res, err
	}
	for v := range ups {
		res.Latest = max(res.Latest, v)
	}
	cfg, err := migrateConnConfig(databaseURL)
	if err != nil {
		return res, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return res, fmt.Errorf("%w: migrate: connect: %w", ErrDatabase, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("%w: migrate: begin: %w", ErrDatabase, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	key, err := migrationLockKey(ctx, tx)
	if err != nil {
		return res, err
	}
	start := time.Now()
	notice := time.AfterFunc(lockWaitNotice, func() {
		logger.InfoContext(ctx, "waiting for the migration lock (another instance is migrating)", "lock_key", key)
	})
	err = waitLock(ctx, tx, key)
	notice.Stop()
	res.LockWait = time.Since(start)
	if err != nil {
		return res, err
	}

	// golang-migrate's table, so its tools (and older binaries) agree.
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)`); err != nil {
		return res, fmt.Errorf("%w: migrate: version table: %w", ErrDatabase, err)
	}
	from, dirty, err := readVersion(ctx, tx)
	if err != nil {
		return res, err
	}
	res.From, res.To = from, from
	if dirty {
		return res, fmt.Errorf("store: migrate: the schema is dirty at version %d (a migration failed half-way outside this tool): repair it by hand, then clear schema_migrations.dirty", from)
	}
	if from >= res.Latest {
		if res.Newer() {
			return res, nil // a newer binary owns the schema, River's included
		}
		return res, migrateRiverAfter(ctx, tx, databaseURL)
	}
	if _, ok := ups[from]; !ok && from != 0 {
		return res, fmt.Errorf("store: migrate: schema version %d is not one of this binary's migrations", from)
	}
	for v := from + 1; v <= res.Latest; v++ {
		body, ok := ups[v]
		if !ok {
			continue // numbers may have gaps
		}
		if _, err := tx.Exec(ctx, body); err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return res, fmt.Errorf("%w: migrate: migration %d: %w", ErrDatabase, v, err)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM schema_migrations`); err != nil {
		return res, fmt.Errorf("%w: migrate: set version: %w", ErrDatabase, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, dirty) VALUES ($1, false)`, int64(res.Latest)); err != nil {
		return res, fmt.Errorf("%w: migrate: set version: %w", ErrDatabase, err)
	}
	if err := tx.Commit(ctx); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return res, fmt.Errorf("%w: migrate: commit: %w", ErrDatabase, err)
	}
	res.To = res.Latest
	return res, MigrateRiverUp(ctx, databaseURL)
}

// MigrateUp is Migrate without a context or a logger, for tests and tools.
func MigrateUp(databaseURL string) error {
	_, err := Migrate(context.Background(), databaseURL, nil)
	return err
}

// migrateConnConfig is the migration connection's configuration: the
// pool's (no server-side prepared statements, pool_* settings understood)
// with its own application_name.
func migrateConnConfig(databaseURL string) (*pgx.ConnConfig, error) {
	if u, err := url.Parse(databaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, errors.New("store: migrate: database URL must be a postgres:// or postgresql:// URL")
	}
	pcfg, err := PoolConfig(databaseURL)
	if err != nil {
		return nil, err
	}
	cfg := pcfg.ConnConfig
	cfg.RuntimeParams["application_name"] = MigrateApplicationName
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	return cfg, nil
}

// lockPoll is how often a waiting Migrate tries the lock again.
const lockPoll = 200 * time.Millisecond

// waitLock takes the transaction-scoped migration lock, trying every
// lockPoll rather than blocking in pg_advisory_xact_lock: no statement is
// in flight when ctx ends, so the wait stops at once and leaves no waiter
// in the server's lock queue (a cancel request would be needed to end a
// blocked statement, and PgBouncer 1.18 crashes on some of those).
func waitLock(ctx context.Context, tx pgx.Tx, key int64) error {
	for {
		var ok bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", key).Scan(&ok); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("store: migrate: waiting for the migration lock: %w", ctx.Err())
			}
			return fmt.Errorf("%w: migrate: migration lock: %w", ErrDatabase, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: migrate: waiting for the migration lock: %w", ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

// migrationLockKey is golang-migrate's advisory lock id for this database's
// schema_migrations table (crc32 of schema, table and database names).
func migrationLockKey(ctx context.Context, tx pgx.Tx) (int64, error) {
	var db, schema string
	if err := tx.QueryRow(ctx, "SELECT current_database(), current_schema()").Scan(&db, &schema); err != nil {
		return 0, fmt.Errorf("%w: migrate: current database: %w", ErrDatabase, err)
	}
	id, err := database.GenerateAdvisoryLockId(db, schema, "schema_migrations")
	if err != nil {
		return 0, fmt.Errorf("store: migrate: lock id: %w", err)
	}
	key, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("store: migrate: lock id %q: %w", id, err)
	}
	return key, nil
}

// readVersion reads schema_migrations (0 when empty).
func readVersion(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (uint, bool, error) {
	var v int64
	var dirty bool
	err := q.QueryRow(ctx, `SELECT version, dirty FROM schema_migrations LIMIT 1`).Scan(&v, &dirty)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("%w: migrate: read version: %w", ErrDatabase, err)
	case v < 0: // golang-migrate's "nil version", dirty after a failed first migration
		return 0, dirty, nil
	}
	return uint(v), dirty, nil
}

// embeddedUps maps each embedded migration's version to its up SQL.
func embeddedUps() (map[uint]string, error) {
	names, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil {
		return nil, fmt.Errorf("store: read embedded migrations: %w", err)
	}
	ups := make(map[uint]string, len(names))
	for _, name := range names {
		m, err := source.DefaultParse(name)
		if err != nil {
			return nil, fmt.Errorf("store: embedded migration %s: %w", name, err)
		}
		b, err := fs.ReadFile(migrations.FS, name)
		if err != nil {
			return nil, fmt.Errorf("store: read embedded migration %s: %w", name, err)
		}
		ups[m.Version] = string(b)
	}
	return ups, nil
}

// MigrateDown rolls back the last n applied migrations (n > 0). Asking for
// more than are applied rolls back all of them and reports the shortfall.
func MigrateDown(databaseURL string, n int) error {
	if n <= 0 {
		return fmt.Errorf("store: migrate down: step count must be positive, got %d", n)
	}
	return withMigrate(databaseURL, func(m *migrate.Migrate) error {
		if err := m.Steps(-n); err != nil {
			return fmt.Errorf("down %d: %w", n, err)
		}
		return nil
	})
}

// MigrationVersion returns the applied schema version (0 when none) and
// whether a failed migration left it dirty. It takes no lock.
func MigrationVersion(databaseURL string) (version uint, dirty bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := migrateConnConfig(databaseURL)
	if err != nil {
		return 0, false, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, false, fmt.Errorf("%w: migrate: connect: %w", ErrDatabase, err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, false, fmt.Errorf("%w: migrate: read version: %w", ErrDatabase, err)
	}
	if !exists {
		return 0, false, nil
	}
	return readVersion(ctx, conn)
}

func withMigrate(databaseURL string, fn func(*migrate.Migrate) error) (err error) {
	migrateURL, err := migrateURL(databaseURL)
	if err != nil {
		return err
	}
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		return fmt.Errorf("store: read embedded migrations: %w", err)
	}
	m, err := migrate.NewWithSourceInstance("iofs", src, migrateURL)
	if err != nil {
		return fmt.Errorf("%w: migrate: connect: %w", ErrDatabase, err)
	}
	defer func() {
		srcErr, dbErr := m.Close()
		if err == nil {
			err = errors.Join(srcErr, dbErr)
		}
	}()
	if err := fn(m); err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	return nil
}

// migrateURL turns a postgres:// URL into the pgx5:// form golang-migrate's
// pgx/v5 driver registers under. Key=value connection strings are not
// supported by golang-migrate.
func migrateURL(databaseURL string) (string, error) {
	u, err := url.Parse(databaseURL)
	if err != nil {
		// url.Error quotes the URL, password included.
		return "", errors.New("store: migrate: database URL cannot be parsed")
	}
	switch u.Scheme {
	case "postgres", "postgresql", "pgx5":
		u.Scheme = "pgx5"
		// pgxpool's own settings (pool_max_conns, ...) are not connection
		// parameters: the migration driver would send them to Postgres,
		// which refuses to connect.
		q := u.Query()
		for k := range q {
			if strings.HasPrefix(k, "pool_") {
				q.Del(k)
			}
		}
		u.RawQuery = q.Encode()
		return u.String(), nil
	default:
		return "", fmt.Errorf("store: migrate: database URL must start with postgres:// or postgresql://, not %q", u.Scheme+"://")
	}
}
