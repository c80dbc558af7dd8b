package testkit

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Querier is what DumpTables reads through: a *pgxpool.Pool, a *pgx.Conn or
// a pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// DumpTables is a pg_dump equivalent for looking for what must not be
// stored: one line "table: row as text" for every row of the named tables,
// or, when none are named, of every table outside the system schemas.
// bytea columns appear in hex, so look for a secret's hex form too.
func DumpTables(t testing.TB, db Querier, tables ...string) string {
	t.Helper()
	ctx := Context(t)
	if len(tables) == 0 {
		rows, err := db.Query(ctx, `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)
			FROM information_schema.tables
			WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'
			ORDER BY 1`)
		if err != nil {
			t.Fatalf("list tables: %v", err)
		}
		if tables, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatalf("list tables: %v", err)
		}
	}
	var sb strings.Builder
	for _, table := range tables {
		name := strings.TrimPrefix(table, "public.")
		rows, err := db.Query(ctx, "SELECT t::text FROM "+table+" t")
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		for _, line := range lines {
			sb.WriteString(name + ": " + line + "\n")
		}
	}
	return sb.String()
}
