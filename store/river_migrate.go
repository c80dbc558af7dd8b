package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
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
// after ours, so concurrent starts apply them once: each River migration
// runs in its own transaction (one adds an enum value that a later one
// uses, which a single transaction refuses), so the lock is a
// transaction-scoped advisory lock held by a transaction of its own that
// stays open meanwhile. Nothing is session-scoped, so this works through
// PgBouncer in transaction mode as well as directly.
func MigrateRiverUp(ctx context.Context, databaseURL string) error {
	ctx, cancel := context.WithTimeout(ctx, riverMigrateTimeout)
	defer cancel()
	cfg, err := migrateConnConfig(databaseURL)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%w: river migrate: connect: %w", ErrDatabase, err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%w: river migrate: begin: %w", ErrDatabase, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	return migrateRiverAfter(ctx, tx, databaseURL)
}

// migrateRiverAfter takes River's migration lock in lockTx (an open
// transaction, held until the caller ends it) and applies River's
// migrations on connections of their own.
func migrateRiverAfter(ctx context.Context, lockTx pgx.Tx, databaseURL string) error {
	if err := waitLock(ctx, lockTx, riverMigrateLock); err != nil {
		return fmt.Errorf("store: river migrate: lock: %w", err)
	}
	pool, err := Open(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return fmt.Errorf("store: river migrate: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("store: river migrate: %w", err)
	}
	return nil
}
