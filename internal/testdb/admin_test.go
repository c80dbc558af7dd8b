package testdb

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

func TestWithDatabase(t *testing.T) {
	tests := []struct {
		in, name, want string
		wantErr        bool
	}{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "irisx_bench",
			"postgres://postgres@127.0.0.1:5432/irisx_bench?sslmode=disable", false},
		{"postgresql://u:pw@db/x", "y", "postgresql://u:pw@db/y", false},
		{"mysql://u@db/x", "y", "", true},
		{"host=db dbname=x", "y", "", true},
	}
	for _, tc := range tests {
		got, err := WithDatabase(tc.in, tc.name)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("WithDatabase(%q, %q) = %q, %v; want %q, error %v", tc.in, tc.name, got, err, tc.want, tc.wantErr)
		}
	}
	// A password never reaches an error message.
	if _, err := WithDatabase("mysql://u:hunter2@db/x", "y"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v quotes the password", err)
	}
}

// CreateDatabase replaces a database left over from an interrupted run with
// an empty one; DropDatabase removes it even with a session still open.
func TestCreateAndDropDatabase(t *testing.T) {
	ctx := testkit.Context(t)
	base, err := server(ctx)
	if err != nil {
		t.Fatal(err)
	}
	name := "t_admin_" + randomHex(4)
	t.Cleanup(func() { _ = DropDatabase(testkit.Context(t), base, name) })
	exists := func() bool {
		t.Helper()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	dbURL, err := CreateDatabase(ctx, base, name)
	if err != nil {
		t.Fatal(err)
	}
	if got := dbName(t, dbURL); got != name || !exists() {
		t.Fatalf("CreateDatabase gave %q (exists: %v), want %q created", got, exists(), name)
	}
	leftover, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer leftover.Close(ctx)
	if _, err := leftover.Exec(ctx, "CREATE TABLE leftover (x int)"); err != nil {
		t.Fatal(err)
	}

	if _, err := CreateDatabase(ctx, base, name); err != nil {
		t.Fatalf("CreateDatabase over a leftover with a session open: %v", err)
	}
	fresh, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	err = fresh.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'leftover'").Scan(&n)
	fresh.Close(ctx)
	if err != nil || n != 0 {
		t.Errorf("the recreated database still holds the leftover table (%d, %v)", n, err)
	}

	if err := DropDatabase(ctx, base, name); err != nil {
		t.Fatal(err)
	}
	if exists() {
		t.Error("DropDatabase left the database")
	}
	if err := DropDatabase(ctx, base, name); err != nil {
		t.Errorf("DropDatabase of a missing database: %v", err)
	}
}
