package main

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/migrations"
)

// A start on a schema one version ahead (a rollback; an old replica during
// a rolling deploy) warns and goes on serving instead of crash-looping.
func TestMigrateAtStartOnNewerSchema(t *testing.T) {
	t.Parallel()
	url := testdb.NewDatabase(t)
	ups, _ := fs.Glob(migrations.FS, "*.up.sql")
	var latest int64
	for _, u := range ups {
		var n int64
		if _, err := fmt.Sscanf(u, "%d_", &n); err == nil && n > latest {
			latest = n
		}
	}
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "UPDATE schema_migrations SET version = $1", latest+1); err != nil {
		t.Fatal(err)
	}
	var logs testkit.Buffer
	if err := migrateAtStart(t.Context(), url, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatalf("migrateAtStart on a newer schema: %v (want a warning, not an error)", err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "newer than this binary") {
		t.Errorf("logs %q: want a warning about the newer schema", logs.String())
	}
}
