package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// Every Reencrypt batch is an index range scan from the cursor that stops
// once the batch is full, with no sort: a rotation of a large table costs
// one pass over it, not one pass per batch. (queryCapture and planNode are
// explain_test.go's.)
func TestReencryptBatchPlanIsKeysetIndexScan(t *testing.T) {
	c := testkit.Context(t)
	cfg, err := pgxpool.ParseConfig(testdb.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	capture := &queryCapture{}
	cfg.ConnConfig.Tracer = capture
	pool, err := pgxpool.NewWithConfig(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// Half the rows are under the old key A. Their ciphertexts are dummies
	// that fail to open, so Reencrypt writes nothing and the last query of
	// each batch is its select.
	const rows = 50_000
	if _, err := pool.Exec(c, `
		INSERT INTO installs (iris_app_id, account_id, status, key_id, client_id_enc, client_secret_enc,
			credentials_version, installed_at, updated_at, last_event_at)
		SELECT '@app/' || (i % 3), md5(i::text)::uuid, $2, CASE WHEN i % 2 = 0 THEN 'A' ELSE 'B' END,
			'\x00'::bytea, '\x00'::bytea, 1, now(), now(), now()
		FROM generate_series(1, $1) AS i`, rows, store.StatusInstalled); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(c, "ANALYZE installs"); err != nil {
		t.Fatal(err)
	}
	_, keysBA := rotationKeys(t)
	const batch = 100
	stop, cancel := context.WithCancel(c)
	defer cancel()
	var sql string
	var args []any
	_, err = store.New(pool, keysBA).Reencrypt(stop, batch, func(p store.Progress) {
		if p.Batches == 2 { // the second batch starts from a cursor
			capture.mu.Lock()
			sql, args = capture.sql, capture.args
			capture.mu.Unlock()
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Reencrypt: %v, want it stopped", err)
	}
	if !strings.HasPrefix(sql, "SELECT") || !strings.Contains(sql, ") > (") {
		t.Fatalf("captured %q, not a batch select from a cursor", sql)
	}
	var raw []byte
	if err := pool.QueryRow(c, "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var plan []struct{ Plan planNode }
	if err := json.Unmarshal(raw, &plan); err != nil || len(plan) != 1 {
		t.Fatalf("EXPLAIN output %s: %v", raw, err)
	}
	var nodes []string
	var pkeyScanRows float64 = -1
	plan[0].Plan.walk(func(n planNode) {
		nodes = append(nodes, n.NodeType)
		if n.NodeType == "Index Scan" && n.IndexName == "installs_pkey" {
			pkeyScanRows = n.ActualRows
		}
	})
	if pkeyScanRows < 0 || strings.Contains(strings.Join(nodes, ","), "Sort") {
		t.Errorf("plan %v: want an index scan of installs_pkey and no sort\n%s", nodes, raw)
	}
	if pkeyScanRows != batch {
		t.Errorf("the index scan returned %v rows, want it to stop at the batch size %d", pkeyScanRows, batch)
	}
}
