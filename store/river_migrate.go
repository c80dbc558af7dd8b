package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// riverMigrateLock is the advisory lock key serialising River's migrations
// across replicas starting at once ("irisxrvr" in ASCII).
const riverMigrateLock int64 = 0x6972697378727672

// riverMigrateTimeout bounds applying River's own schema.
const riverMigrateTimeout = 5 * time.Minute

// MigrateRiverUp applies River's own migrations (its job queue tables),
// which the event delivery jobs need. It runs as part of the migrate step,
// after ours, under an advisory lock, so concurrent
// starts apply them once.
func MigrateRiverUp(databaseURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), riverMigrateTimeout)
	defer cancel()
	pool, err := Open(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	return migrateRiver(ctx, pool)
}

func migrateRiver(ctx context.Context, pool *pgxpool.Pool) error {
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return fmt.Errorf("store: river migrate: %w", err)
	}
	// Each River migration runs in its own transaction (one adds an enum
	// value that a later one uses, which a single transaction refuses), so
	// the lock is a session lock on a connection of its own.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("store: river migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, riverMigrateLock); err != nil {
		return fmt.Errorf("store: river migrate: lock: %w", err)
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, riverMigrateLock)
	}()
	_, err = migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return fmt.Errorf("store: river migrate: %w", err)
	}
	return nil
}
