package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RateLimitHold returns when the IRIS API proxy may next send a GraphQL call
// for the install, as set by HoldRateLimit; the zero time means no hold was
// ever recorded. Whether the hold still applies is the caller's decision
// (its clock), so a past time is returned as it is.
func (s *Store) RateLimitHold(ctx context.Context, irisAppID, accountID string) (time.Time, error) {
	var resetAt time.Time
	err := s.pool.QueryRow(ctx,
		`SELECT reset_at FROM proxy_rate_limits WHERE iris_app_id = $1 AND account_id = $2`,
		irisAppID, accountID).Scan(&resetAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: read rate-limit hold: %w", ErrDatabase, err)
	}
	return resetAt, nil
}

// HoldRateLimit records that the install's GraphQL budget is spent until
// resetAt. A hold only ever grows: a shorter reset (from a replica whose
// answer was older) does not shorten a longer one. now is the caller's
// clock, kept as updated_at.
func (s *Store) HoldRateLimit(ctx context.Context, irisAppID, accountID string, resetAt, now time.Time) error {
	_, err := s.pool.Exec(ctx, `
INSERT INTO proxy_rate_limits (iris_app_id, account_id, reset_at, updated_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (iris_app_id, account_id) DO UPDATE
SET reset_at = GREATEST(proxy_rate_limits.reset_at, EXCLUDED.reset_at),
    updated_at = EXCLUDED.updated_at`,
		irisAppID, accountID, pgTime(resetAt), pgTime(now))
	if err != nil {
		return fmt.Errorf("%w: record rate-limit hold: %w", ErrDatabase, err)
	}
	return nil
}
