package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/irisx-broker/irisx-broker/internal/service"
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

// migrateAtStart is the service's own migration step (see service.Migrate).
func migrateAtStart(ctx context.Context, directURL string, log *slog.Logger) error {
	return service.Migrate(ctx, directURL, log)
}
