package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/irisx-broker/irisx-broker/store"
)

// runMigrate applies or reverts migrations. It needs only DATABASE_URL, so
// a schema can be prepared before keys and tokens exist.
func runMigrate(_ context.Context, args []string, lookup env, stdout io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return err
	}
	url, ok := lookup("DATABASE_URL")
	if !ok || url == "" {
		return errors.New("DATABASE_URL: required")
	}
	switch fs.Arg(0) {
	case "up":
		if err := store.MigrateUp(url); err != nil {
			return err
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
