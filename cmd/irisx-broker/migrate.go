package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/irisx-broker/irisx-broker/store"
)

// runMigrate applies or reverts migrations. It needs only DATABASE_URL (or
// DATABASE_DIRECT_URL, preferred when set), so
// a schema can be prepared before keys and tokens exist.
func runMigrate(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Migrations take a session-free lock but belong on the direct
	// connection (DATABASE_DIRECT_URL) when a pooler sits in between.
	url, ok := lookup("DATABASE_DIRECT_URL")
	if !ok || url == "" {
		url, ok = lookup("DATABASE_URL")
	}
	if !ok || url == "" {
		return errors.New("DATABASE_URL: required")
	}
	switch fs.Arg(0) {
	case "up":
		res, err := store.Migrate(ctx, url, slog.New(slog.NewTextHandler(stderr, nil)))
		if err != nil {
			return err
		}
		if res.Newer() {
			fmt.Fprintf(stdout, "the database schema (version %d) is newer than this binary's migrations (up to %d): nothing to do\n", res.From, res.Latest)
		}
	case "down":
		n, err := strconv.Atoi(fs.Arg(1))
		if err != nil || n < 1 {
			return errors.New("usage: migrate down N (N ≥ 1 migrations to revert)")
		}
		if err := store.MigrateDown(url, n); err != nil {
			return err
		}
	case "version":
	default:
		return errors.New("usage: migrate up|down N|version")
	}
	v, dirty, err := store.MigrationVersion(url)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "version %d", v)
	if dirty {
		fmt.Fprint(stdout, " (dirty)")
	}
	fmt.Fprintln(stdout)
	return nil
}

// migrateAtStart applies pending migrations on the direct database URL
// before serving. A schema newer than this binary's (a rollback, or a
// newer replica that migrated first during a rolling deploy) is logged and
// served: migrations are expand-then-contract (migrations/README.md).
func migrateAtStart(ctx context.Context, directURL string, log *slog.Logger) error {
	res, err := store.Migrate(ctx, directURL, log)
	if err != nil {
		return fmt.Errorf("applying migrations: %w", err)
	}
	switch {
	case res.Newer():
		log.Warn("the database schema is newer than this binary; serving on it (migrations are expand-then-contract)",
			"schema_version", res.From, "binary_latest_migration", res.Latest)
	case res.Applied() > 0:
		log.Info("migrations applied", "from_version", res.From, "to_version", res.To, "lock_wait", res.LockWait)
	}
	return nil
}
