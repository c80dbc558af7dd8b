package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
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
// after ours, in one transaction under an advisory lock, so concurrent
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
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, riverMigrateLock); err != nil {
			return err
		}
		_, err := migrator.MigrateTx(ctx, tx, rivermigrate.DirectionUp, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: river migrate: %w", err)
	}
	return nil
}
