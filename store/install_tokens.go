package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// MarkCredentialsRejected sets an installed install to credentials_rejected
// with lastError (a short code, never upstream text), but only while its
// credentials_version still equals version: credentials replaced since the
// rejection are not marked. Matching nothing (replaced, uninstalled,
// already marked, unknown) is not an error. A change is announced on
// ChannelInstallChanged so every replica stops using the credentials.
func (s *Store) MarkCredentialsRejected(ctx context.Context, irisAppID, accountID string, version int64, lastError string) error {
	key, err := installKey(irisAppID, accountID)
	if err != nil {
		return nil // no such install can exist, so nothing to mark
	}
	// The notification is sent only if the row changed, in the
	// transaction that also writes the lifecycle event.
	var marked bool
	err = s.retry(ctx, func() error {
		return s.inTx(ctx, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `WITH marked AS (
			UPDATE installs SET status = '`+string(StatusCredentialsRejected)+`', last_error = $4, updated_at = $5
			WHERE iris_app_id = $1 AND account_id = $2 AND credentials_version = $3 AND status = '`+string(StatusInstalled)+`'
			RETURNING 1
		), dropped AS (
			DELETE FROM shared_tokens WHERE kind = $8 AND credential = $9 AND EXISTS (SELECT 1 FROM marked)
		)
		SELECT pg_notify($6, $7) FROM marked`,
				key.IrisAppID, key.AccountID, version, clean(lastError, maxLastErrorLen), s.nowUTC(),
				ChannelInstallChanged, key.notifyPayload(), TokenKindInstall, InstallCredential(key.IrisAppID, key.AccountID))
			if marked = err == nil && tag.RowsAffected() == 1; !marked {
				return err
			}
			return s.writeEvent(ctx, tx, key, EventCredentialsRejected, StatusCredentialsRejected)
		})
	})
	if err != nil {
		return fmt.Errorf("%w: mark credentials rejected: %w", ErrDatabase, err)
	}
	if marked {
		s.eventCommitted(EventCredentialsRejected)
	}
	return nil
}

// RecordTokenResults records a batch of upstream token outcomes: per
// install, last_token_at becomes the latest successful call and last_error
// the latest call's error (cleared by a later success). Results for unknown
// installs are dropped. It neither bumps updated_at nor notifies: token
// bookkeeping is not an install change.
func (s *Store) RecordTokenResults(ctx context.Context, results []TokenResult) error {
	type agg struct {
		key    InstallKey
		okAt   *time.Time
		lastAt time.Time
		err    string
	}
	byKey := make(map[InstallKey]*agg, len(results))
	for _, r := range results {
		key, err := installKey(r.IrisAppID, r.AccountID)
		if err != nil {
			continue // cannot name a stored install
		}
		at := pgTime(r.At)
		a := byKey[key]
		if a == nil {
			a = &agg{key: key, lastAt: at, err: r.LastError}
			byKey[key] = a
		} else if !at.Before(a.lastAt) {
			a.lastAt, a.err = at, r.LastError
		}
		if r.LastError == "" && (a.okAt == nil || at.After(*a.okAt)) {
			a.okAt = &at
		}
	}
	if len(byKey) == 0 {
		return nil
	}
	aggs := make([]*agg, 0, len(byKey))
	for _, a := range byKey {
		aggs = append(aggs, a)
	}
	slices.SortFunc(aggs, func(x, y *agg) int {
		return cmp.Or(cmp.Compare(x.key.IrisAppID, y.key.IrisAppID), cmp.Compare(x.key.AccountID, y.key.AccountID))
	})
	apps := make([]string, len(aggs))
	accounts := make([]string, len(aggs))
	okAts := make([]*time.Time, len(aggs))
	errs := make([]string, len(aggs))
	for i, a := range aggs {
		apps[i], accounts[i], okAts[i], errs[i] = a.key.IrisAppID, a.key.AccountID, a.okAt, clean(a.err, maxLastErrorLen)
	}
	// The rows are locked in key order first, so two replicas recording
	// overlapping batches at once cannot deadlock. greatest() ignores NULL:
	// a batch without a success keeps the earlier last_token_at.
	err := s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `WITH r AS (
			SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::text[])
				AS r(iris_app_id, account_id, ok_at, err)
		), locked AS (
			SELECT i.iris_app_id, i.account_id FROM installs i
			JOIN r USING (iris_app_id, account_id)
			ORDER BY i.iris_app_id, i.account_id
			FOR UPDATE OF i
		)
		UPDATE installs i SET
			last_token_at = greatest(i.last_token_at, r.ok_at),
			last_error = NULLIF(r.err, '')
		FROM r JOIN locked USING (iris_app_id, account_id)
		WHERE i.iris_app_id = r.iris_app_id AND i.account_id = r.account_id`,
			apps, accounts, okAts, errs)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: record token results: %w", ErrDatabase, err)
	}
	return nil
}
