package harness

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultServerURL is the local Postgres of the development set-up; the
// benchmark uses TEST_DATABASE_URL's server instead when it is set.
const DefaultServerURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// WithDatabase returns serverURL with its database name replaced.
func WithDatabase(serverURL, name string) (string, error) {
	u, err := url.Parse(serverURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("harness: %q is not a postgres:// URL", redactURL(serverURL))
	}
	u.Path = "/" + name
	return u.String(), nil
}

// CreateDatabase (re)creates an empty database on the server of serverURL,
// dropping any left over from an interrupted run, and returns its URL.
func CreateDatabase(ctx context.Context, serverURL, name string) (string, error) {
	dbURL, err := WithDatabase(serverURL, name)
	if err != nil {
		return "", err
	}
	for _, sql := range []string{
		"DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)",
		"CREATE DATABASE " + pgx.Identifier{name}.Sanitize(),
	} {
		if err := execAdmin(ctx, serverURL, sql); err != nil {
			return "", err
		}
	}
	return dbURL, nil
}

// DropDatabase drops a database, ending its sessions.
func DropDatabase(ctx context.Context, serverURL, name string) error {
	return execAdmin(ctx, serverURL, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

func execAdmin(ctx context.Context, serverURL, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return fmt.Errorf("harness: connect to %s: %w", redactURL(serverURL), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("harness: %s: %w", sql, err)
	}
	return nil
}

// redactURL drops a URL's password so it can be quoted in an error.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
