package store_test

import (
	"fmt"
	"io/fs"
	"testing"

	"github.com/irisx-broker/irisx-broker/migrations"
	"github.com/irisx-broker/irisx-broker/store"
)

// latestMigration is the number of the newest embedded migration (numbers
// reserved per branch may leave gaps until the merge renumbers them).
func latestMigration(t *testing.T) uint {
	t.Helper()
	ups, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil || len(ups) == 0 {
		t.Fatalf("no embedded migrations: %v", err)
	}
	var latest uint
	for _, name := range ups {
		var n uint
		if _, err := fmt.Sscanf(name, "%04d_", &n); err == nil && n > latest {
			latest = n
		}
	}
	return latest
}

func TestMigrations(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // already migrated up by testdb
	version := func() uint {
		t.Helper()
		v, dirty, err := store.MigrationVersion(e.url)
		if err != nil || dirty {
			t.Fatalf("MigrationVersion = %d, dirty %v, %v", v, dirty, err)
		}
		return v
	}
	tables := func() int {
		return e.count(t, `SELECT count(*) FROM information_schema.tables
			WHERE table_schema = 'public' AND table_name IN ('installs', 'install_events', 'api_users')`)
	}
	latest := latestMigration(t)
	if v := version(); v != latest {
		t.Errorf("version = %d, want %d", v, latest)
	}
	if err := store.MigrateUp(e.url); err != nil {
		t.Errorf("MigrateUp with nothing pending: %v", err)
	}
	ups, _ := fs.Glob(migrations.FS, "*.up.sql")
	if err := store.MigrateDown(e.url, len(ups)); err != nil {
		t.Fatalf("MigrateDown: %v", err)
	}
	if v, n := version(), tables(); v != 0 || n != 0 {
		t.Errorf("after down: version %d with %d tables, want 0 and 0", v, n)
	}
	if err := store.MigrateDown(e.url, 1); err == nil {
		t.Errorf("MigrateDown below version 0 succeeded")
	}
	if err := store.MigrateUp(e.url); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	if v, n := version(), tables(); v != latest || n != 3 {
		t.Errorf("after up: version %d with %d tables, want %d and 3", v, n, latest)
	}
	for _, bad := range []string{"mysql://x/y", "host=localhost dbname=x", "postgres://%zz"} {
		if err := store.MigrateUp(bad); err == nil {
			t.Errorf("MigrateUp(%q) succeeded", bad)
		}
	}
	if err := store.MigrateDown(e.url, 0); err == nil {
		t.Errorf("MigrateDown(0) succeeded")
	}
}

// pgxpool settings in DATABASE_URL do not break migrations.
func TestMigrateIgnoresPoolParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	url := e.url + "&pool_max_conns=4&pool_min_conns=1"
	if err := store.MigrateUp(url); err != nil {
		t.Fatalf("MigrateUp with pool parameters: %v", err)
	}
	if _, _, err := store.MigrationVersion(url); err != nil {
		t.Fatalf("MigrationVersion with pool parameters: %v", err)
	}
}
