package testdb

import (
	"context"
	"fmt"
	"net/url"
	"time"
)

// DefaultServerURL is the local Postgres of the development set-up (the
// one scripts/ensure-postgres.sh provides), for tools that make databases
// of their own outside a test, such as the benchmark runner.
const DefaultServerURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// adminTimeout bounds one CreateDatabase or DropDatabase statement.
const adminTimeout = time.Minute

// WithDatabase returns serverURL, a postgres:// URL, with its database name
// replaced. Its error never quotes the URL, which may hold a password.
func WithDatabase(serverURL, name string) (string, error) {
	u, err := url.Parse(serverURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("testdb: the server URL is not a postgres:// URL")
	}
	u.Path = "/" + name
	return u.String(), nil
}

// CreateDatabase creates an empty database (no schema) named name on the
// server of serverURL, first dropping one left over from an interrupted
// run, and returns its URL. It is for databases that outlive a test, such
// as the benchmark's; a test wants NewDatabase.
func CreateDatabase(ctx context.Context, serverURL, name string) (string, error) {
	dbURL, err := WithDatabase(serverURL, name)
	if err != nil {
		return "", err
	}
	if err := DropDatabase(ctx, serverURL, name); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	if err := execAdmin(ctx, serverURL, "CREATE DATABASE "+ident(name)); err != nil {
		return "", fmt.Errorf("testdb: create database %s: %w", name, err)
	}
	return dbURL, nil
}

// DropDatabase drops the database name if it exists, ending its sessions.
func DropDatabase(ctx context.Context, serverURL, name string) error {
	if _, err := WithDatabase(serverURL, name); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	if err := execAdmin(ctx, serverURL, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("testdb: drop database %s: %w", name, err)
	}
	return nil
}
