package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// InstallCounts returns how many installs have each status, for the
// installs-by-status gauge. It reads the status index only.
func (s *Store) InstallCounts(ctx context.Context) (map[InstallStatus]int64, error) {
	rows, _ := s.pool.Query(ctx, `SELECT status, count(*) FROM installs GROUP BY status`)
	counts := map[InstallStatus]int64{StatusInstalled: 0, StatusUninstalled: 0, StatusCredentialsRejected: 0}
	var (
		st InstallStatus
		n  int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&st, &n}, func() error { counts[st] = n; return nil }); err != nil {
		return nil, fmt.Errorf("%w: count installs by status: %w", ErrDatabase, err)
	}
	return counts, nil
}
