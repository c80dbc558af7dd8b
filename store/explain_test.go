package store_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// queryCapture records the SQL and arguments of the last query a pool sent.
type queryCapture struct {
	mu   sync.Mutex
	sql  string
	args []any
}

func (q *queryCapture) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sql, q.args = d.SQL, d.Args
	return ctx
}

func (q *queryCapture) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

type planNode struct {
	NodeType   string     `json:"Node Type"`
	IndexName  string     `json:"Index Name"`
	ActualRows float64    `json:"Actual Rows"`
	Plans      []planNode `json:"Plans"`
}

func (n planNode) walk(f func(planNode)) {
	f(n)
	for _, c := range n.Plans {
		c.walk(f)
	}
}

// Page 10,000 costs what page 1 costs: every listing the store sends, with
// or without filters, deep in a large table, is an index range scan that
// reads no more rows than the page holds, with no sort.
func TestListInstallsPlanIsKeysetIndexScan(t *testing.T) {
	ctx := context.Background()
	url := testdb.NewDatabase(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	capture := &queryCapture{}
	cfg.ConnConfig.Tracer = capture
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const rows = 200_000
	if _, err := pool.Exec(ctx, `
		INSERT INTO installs (iris_app_id, account_id, status, key_id, client_id_enc, client_secret_enc,
			credentials_version, installed_at, updated_at, last_event_at)
		SELECT '@app/' || (i % 4), md5(i::text)::uuid,
			CASE WHEN i % 7 = 0 THEN $2 ELSE $3 END,
			'k1', '\x00'::bytea, '\x00'::bytea, 1, now(), now(), now()
		FROM generate_series(1, $1) AS i`, rows, store.StatusCredentialsRejected, store.StatusInstalled); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE installs"); err != nil {
		t.Fatal(err)
	}
	keys := testkit.Keyring(t, "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	st := store.New(pool, keys)

	// A start key about 80% of the way through the table.
	var after store.InstallKey
	if err := pool.QueryRow(ctx, `SELECT iris_app_id, account_id::text FROM installs
		ORDER BY iris_app_id, account_id OFFSET $1 LIMIT 1`, rows*8/10).Scan(&after.IrisAppID, &after.AccountID); err != nil {
		t.Fatal(err)
	}
	const limit = 51
	cases := map[string]store.ListFilter{
		"first page":            {Limit: limit},
		"late page":             {After: &after, Limit: limit},
		"late page, app":        {IrisAppID: after.IrisAppID, After: &after, Limit: limit},
		"late page, status":     {Status: store.StatusCredentialsRejected, After: &after, Limit: limit},
		"late page, app+status": {IrisAppID: after.IrisAppID, Status: store.StatusInstalled, After: &after, Limit: limit},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := st.ListInstalls(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != limit {
				t.Fatalf("listed %d rows, want a full page of %d", len(got), limit)
			}
			capture.mu.Lock()
			sql, args := capture.sql, capture.args
			capture.mu.Unlock()
			if !strings.Contains(sql, "FROM installs") {
				t.Fatalf("captured %q, not the listing", sql)
			}
			var raw []byte
			if err := pool.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
				t.Fatal(err)
			}
			var plan []struct{ Plan planNode }
			if err := json.Unmarshal(raw, &plan); err != nil {
				t.Fatal(err)
			}
			var scans int
			plan[0].Plan.walk(func(n planNode) {
				switch n.NodeType {
				case "Sort", "Seq Scan", "Bitmap Heap Scan", "Incremental Sort":
					t.Errorf("plan has a %s node: %s", n.NodeType, raw)
				case "Index Scan", "Index Only Scan":
					scans++
					// A filter the index does not serve would read many
					// rows for each one returned.
					if n.ActualRows > limit {
						t.Errorf("%s on %s read %v rows for a page of %d", n.NodeType, n.IndexName, n.ActualRows, limit)
					}
				}
			})
			if scans != 1 {
				t.Errorf("plan has %d index scans, want 1: %s", scans, raw)
			}
		})
	}
}
