package store

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers the pgx5:// driver
	"github.com/golang-migrate/migrate/v4/source/iofs"

	"github.com/irisx-broker/irisx-broker/migrations"
)

// MigrateUp applies every pending migration. Having none pending is not an
// error. golang-migrate holds a Postgres advisory lock meanwhile, so
// replicas starting together migrate once.
func MigrateUp(databaseURL string) error {
	return withMigrate(databaseURL, func(m *migrate.Migrate) error {
		if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
			return fmt.Errorf("up: %w", err)
		}
		return MigrateRiverUp(databaseURL)
	})
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
// whether a failed migration left it dirty.
func MigrationVersion(databaseURL string) (version uint, dirty bool, err error) {
	err = withMigrate(databaseURL, func(m *migrate.Migrate) error {
		version, dirty, err = m.Version()
		if errors.Is(err, migrate.ErrNilVersion) {
			version, dirty, err = 0, false, nil
		}
		return err
	})
	return version, dirty, err
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
		return fmt.Errorf("store: migrate: connect: %w", err)
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
