package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// Batch sizes of Reencrypt.
const (
	// DefaultReencryptBatch is the batch size used when Reencrypt is given
	// zero or less.
	DefaultReencryptBatch = 500
	// MaxReencryptBatch bounds a batch: its rows stay locked until the
	// whole batch commits, and installs arriving meanwhile wait for them.
	MaxReencryptBatch = 10000
	// MaxReportedFailures bounds Result.Failures; the counts go on.
	MaxReportedFailures = 100
)

// reencryptBatchTimeout bounds one batch. A batch is not cut short when the
// caller's context ends (it is finished first), so this is what stops a
// batch stuck on a dead database.
const reencryptBatchTimeout = 2 * time.Minute

// reencryptAttempts bounds how often a row that keeps changing between read
// and write is re-read and tried again in one run.
const reencryptAttempts = 3

// KeyCounts is what a Reencrypt run did with the rows it found under one old
// key id. Every row it looked at is counted exactly once.
type KeyCounts struct {
	// Moved rows were opened and sealed again under the primary key.
	Moved int64
	// Skipped rows changed between read and write (a new INSTALLED, an
	// UNINSTALLED, another run) and were left as the change made them.
	Skipped int64
	// Failed rows could not be opened (key id not in the keyring, altered
	// or misplaced ciphertext) and were left untouched.
	Failed int64
}

// Failure names a row whose ciphertext could not be opened. It never holds
// a secret: the row key is the install's (app id, account id).
type Failure struct {
	Table  string
	Row    string
	Column string
	KeyID  string
	Reason string // "unknown key id" or "does not authenticate"
}

// Result is the outcome of a Reencrypt run.
type Result struct {
	// Primary is the key id every moved row is now sealed under.
	Primary string
	// ByKey counts the rows found under each old key id.
	ByKey map[string]KeyCounts
	// Failures lists the first MaxReportedFailures rows that failed.
	Failures []Failure
	// Batches is how many batches were written.
	Batches int
	// Remaining counts, per key id, the rows still not under the primary
	// once the run completed: the failures, and rows written meanwhile by
	// a replica whose keyring has another primary. Nil if the run stopped
	// early.
	Remaining map[string]int64
}

// Total sums ByKey.
func (r Result) Total() KeyCounts {
	var t KeyCounts
	for _, c := range r.ByKey {
		t.Moved += c.Moved
		t.Skipped += c.Skipped
		t.Failed += c.Failed
	}
	return t
}

func (r *Result) add(keyID string, moved, skipped, failed int64) {
	c := r.ByKey[keyID]
	c.Moved += moved
	c.Skipped += skipped
	c.Failed += failed
	r.ByKey[keyID] = c
}

// Progress is reported to Reencrypt's callback after every batch.
type Progress struct {
	Table   string
	Batches int       // batches done so far in this run
	Rows    int64     // rows looked at so far in this run
	Total   KeyCounts // Result.Total so far
}

// Reencrypt moves every stored ciphertext not sealed under the keyring's
// primary key to the primary, in batches of batchSize rows
// (DefaultReencryptBatch when zero or less, at most MaxReencryptBatch).
//
// It is safe while the service runs. Rows are read without locks, opened
// and sealed in Go, and each is written back only if it still holds the
// ciphertexts that were read (optimistic locking): an INSTALLED that
// replaced the credentials meanwhile is never overwritten with the old
// ones. Such a row is re-read and moved if it is still under an old key,
// else counted as skipped. A row that cannot be opened is counted and
// reported, never fatal. Moving changes neither credentials_version nor
// updated_at: the credentials themselves are the same.
//
// It is resumable: it only ever selects rows not under the primary, walking
// each table in primary-key order, so a run that was killed continues where
// it stopped when started again, and a second run finds nothing to do.
// When ctx ends, the current batch is finished and Reencrypt returns what
// it did with an error wrapping ctx.Err(). progress, if not nil, is called
// after every batch.
func (s *Store) Reencrypt(ctx context.Context, batchSize int, progress func(Progress)) (Result, error) {
	if batchSize <= 0 {
		batchSize = DefaultReencryptBatch
	}
	batchSize = min(batchSize, MaxReencryptBatch)
	res := Result{Primary: s.keys.PrimaryID(), ByKey: make(map[string]KeyCounts)}
	var rows int64
	for i := range sealedTables {
		t := &sealedTables[i]
		var after []string // keyset cursor: the last row of the previous batch
		for {
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("store: reencrypt: stopped after %d batches: %w", res.Batches, err)
			}
			bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reencryptBatchTimeout)
			last, n, err := s.reencryptBatch(bctx, t, after, batchSize, &res)
			cancel()
			if err != nil {
				return res, fmt.Errorf("store: reencrypt %s: %w", t.table, err)
			}
			if n == 0 {
				break
			}
			after, rows = last, rows+int64(n)
			res.Batches++
			if progress != nil {
				progress(Progress{Table: t.table, Batches: res.Batches, Rows: rows, Total: res.Total()})
			}
			if n < batchSize {
				break
			}
		}
	}
	remaining, err := s.remainingKeyIDs(ctx)
	if err != nil {
		return res, err
	}
	res.Remaining = remaining
	return res, nil
}

// reencryptBatch moves up to limit rows of t after the cursor. It returns
// the key of the last row read and how many rows were read.
func (s *Store) reencryptBatch(ctx context.Context, t *sealedTable, after []string, limit int, res *Result) ([]string, int, error) {
	var rows []*sealedRow
	err := s.retry(ctx, func() (err error) {
		rows, err = s.readSealed(ctx, t, t.selectSQL(after != nil), t.selectArgs(s.keys.PrimaryID(), after, limit))
		return err
	})
	if err != nil || len(rows) == 0 {
		return nil, 0, err
	}
	pending := rows
	for attempt := 1; len(pending) > 0; attempt++ {
		var moves []move
		for _, r := range pending {
			enc, err := s.reseal(t, r)
			var undecryptable *openError
			if errors.As(err, &undecryptable) {
				res.add(r.keyID, 0, 0, 1)
				if len(res.Failures) < MaxReportedFailures {
					res.Failures = append(res.Failures, Failure{Table: t.table, Row: t.rowKey(r.key),
						Column: undecryptable.column, KeyID: r.keyID, Reason: undecryptable.reason()})
				}
				continue
			}
			if err != nil {
				return nil, 0, err
			}
			moves = append(moves, move{row: r, enc: enc})
		}
		missed, err := s.writeMoves(ctx, t, moves)
		if err != nil {
			return nil, 0, err
		}
		for _, m := range moves {
			if !missed[m.row] {
				res.add(m.row.keyID, 1, 0, 0)
			}
		}
		pending = nil
		for _, m := range moves {
			if !missed[m.row] {
				continue
			}
			var cur []*sealedRow
			if attempt < reencryptAttempts {
				if cur, err = s.readSealed(ctx, t, t.rereadSQL(), t.rereadArgs(s.keys.PrimaryID(), m.row.key)); err != nil {
					return nil, 0, err
				}
			}
			if len(cur) == 0 {
				// Now under the primary, erased, deleted, or still
				// changing after every attempt: a later run sees it.
				res.add(m.row.keyID, 0, 1, 0)
				continue
			}
			pending = append(pending, cur[0])
		}
	}
	return rows[len(rows)-1].key, len(rows), nil
}

// sealedRow is one row read for re-encryption.
type sealedRow struct {
	key     []string // the primary key columns as text
	keyID   string
	enc     [][]byte // per sealedTable.columns; nil where the column is NULL
	version int64    // sealedTable.version, if it has one
}

// move is a row with its ciphertexts sealed again under the primary.
type move struct {
	row *sealedRow
	enc [][]byte
}

// openError is a ciphertext that does not open: the row is reported, the
// run goes on.
type openError struct {
	column string
	err    error
}

func (e *openError) Error() string { return e.column + ": " + e.err.Error() }

func (e *openError) reason() string {
	if errors.Is(e.err, crypto.ErrUnknownKey) {
		return "unknown key id"
	}
	return "does not authenticate"
}

// reseal opens every ciphertext of r at its location and seals it under the
// primary. Opening fails with *openError; any other error (no randomness)
// is fatal. Plaintexts are wiped as soon as they are sealed again.
func (s *Store) reseal(t *sealedTable, r *sealedRow) ([][]byte, error) {
	row := t.rowKey(r.key)
	out := make([][]byte, len(t.columns))
	for i, c := range t.columns {
		if r.enc[i] == nil {
			continue
		}
		loc := crypto.Location{Table: t.table, Row: row, Column: c.aad}
		plain, err := s.keys.Open(r.keyID, r.enc[i], loc)
		if err != nil {
			return nil, &openError{column: c.aad, err: err}
		}
		_, out[i], err = s.keys.Seal(plain, loc)
		clear(plain)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readSealed runs a select of sealedTable.selectColumns.
func (s *Store) readSealed(ctx context.Context, t *sealedTable, sql string, args []any) ([]*sealedRow, error) {
	rows, _ := s.pool.Query(ctx, sql, args...)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*sealedRow, error) {
		r := &sealedRow{key: make([]string, len(t.key)), enc: make([][]byte, len(t.columns))}
		dest := make([]any, 0, len(t.key)+len(t.columns)+2)
		for i := range r.key {
			dest = append(dest, &r.key[i])
		}
		dest = append(dest, &r.keyID)
		for i := range r.enc {
			dest = append(dest, &r.enc[i])
		}
		if t.version != "" {
			dest = append(dest, &r.version)
		}
		return r, row.Scan(dest...)
	})
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrDatabase, t.table, err)
	}
	return out, nil
}

// writeMoves writes every move, each only if its row still holds what was
// read, and returns the rows that had changed. The batch is one round trip
// and one implicit transaction; its rows are locked in primary-key order,
// as every other multi-row writer locks them, so it cannot deadlock.
func (s *Store) writeMoves(ctx context.Context, t *sealedTable, moves []move) (map[*sealedRow]bool, error) {
	missed := make(map[*sealedRow]bool)
	if len(moves) == 0 {
		return missed, nil
	}
	b := &pgx.Batch{}
	for _, m := range moves {
		b.Queue(t.updateSQL(), t.updateArgs(s.keys.PrimaryID(), m)...)
	}
	br := s.pool.SendBatch(ctx, b)
	for _, m := range moves {
		tag, err := br.Exec()
		if err != nil {
			_ = br.Close()
			return nil, fmt.Errorf("%w: write batch: %w", ErrDatabase, err)
		}
		if tag.RowsAffected() == 0 {
			missed[m.row] = true
		}
	}
	// Close waits for the commit; until it succeeds nothing was moved.
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("%w: write batch: %w", ErrDatabase, err)
	}
	return missed, nil
}

// remainingKeyIDs counts, over every sealed table, the rows whose
// ciphertexts are not under the primary, by key id.
func (s *Store) remainingKeyIDs(ctx context.Context) (map[string]int64, error) {
	counts := make(map[string]int64)
	for i := range sealedTables {
		t := &sealedTables[i]
		rows, _ := s.pool.Query(ctx, t.remainingSQL(), s.keys.PrimaryID())
		var (
			id string
			n  int64
		)
		_, err := pgx.ForEachRow(rows, []any{&id, &n}, func() error {
			counts[id] += n
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%w: reencrypt: count remaining in %s: %w", ErrDatabase, t.table, err)
		}
	}
	return counts, nil
}
