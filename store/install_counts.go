package store

import (
	"context"
	"fmt"
)

// InstallCounts returns how many installs have each status, for the
// installs-by-status gauge. It reads the status index only.
func (s *Store) InstallCounts(ctx context.Context) (map[InstallStatus]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT status, count(*) FROM installs GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("counting installs by status: %w", err)
	}
	defer rows.Close()
	counts := map[InstallStatus]int64{StatusInstalled: 0, StatusUninstalled: 0, StatusCredentialsRejected: 0}
	for rows.Next() {
		var st InstallStatus
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("counting installs by status: %w", err)
		}
		counts[st] = n
	}
	return counts, rows.Err()
}
