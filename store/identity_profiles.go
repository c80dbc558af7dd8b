package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// MaxIdentityProfiles is how many profiles of each verdict are kept and
// listed. Per verdict, so that a flood of refused tokens (anyone can send
// one) never pushes out the accepted ones (only Trackunit can sign those).
// Every profilePruneEvery-th insert of a verdict on a replica deletes all
// but the newest MaxIdentityProfiles, so the table holds at most
// MaxIdentityProfiles + profilePruneEvery - 1 rows per verdict and replica
// between prunes: pruning walks MaxIdentityProfiles index entries, which
// cost more than the insert itself when done on every callback.
const MaxIdentityProfiles = 500

// profilePruneEvery is how many inserts of one verdict share one prune.
const profilePruneEvery = 32

// Bounds applied to a profile before it is stored; the broker has cut and
// escaped every string already, these only keep a bug from growing a row.
const (
	maxProfileText  = 512
	maxProfileNames = 64
)

// Verdicts of IdentityProfile.Verdict.
const (
	VerdictAccepted = "accepted"
	VerdictRefused  = "refused"
)

// IdentityProfile is the non-secret shape of one identity token and, when
// the body was read, the names of the callback's unknown body fields. It
// never holds a token, a signature or a claim value other than iss and aud.
type IdentityProfile struct {
	ID         int64     `db:"id"`
	SeenAt     time.Time `db:"seen_at"`
	Verdict    string    `db:"verdict"`
	Rule       string    `db:"rule"`
	Alg        string    `db:"alg"`
	Kid        string    `db:"kid"`
	Typ        string    `db:"typ"`
	Iss        string    `db:"iss"`
	Aud        []string  `db:"aud"`
	Claims     []string  `db:"claims"`
	ClaimCount int       `db:"claim_count"`
	// Age (now - iat) and Lifetime (exp - iat); nil when unknown.
	Age      *time.Duration `db:"-"`
	Lifetime *time.Duration `db:"-"`
	// UnknownFields are body field names the broker does not know; nil
	// when the body was not looked at.
	UnknownFields []string `db:"unknown_fields"`
}

const insertProfileSQL = `INSERT INTO identity_profiles
	(seen_at, verdict, rule, alg, kid, typ, iss, aud, claims, claim_count, age_ms, lifetime_ms, unknown_fields)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`

// pruneProfilesSQL deletes all but the newest $2 rows of verdict $1: one
// index range, since the rows to keep are found by the same index.
const pruneProfilesSQL = `DELETE FROM identity_profiles
	WHERE verdict = $1 AND id < (
		SELECT id FROM identity_profiles WHERE verdict = $1 ORDER BY id DESC OFFSET $2 - 1 LIMIT 1)`

// RecordIdentityProfile stores p and, on every profilePruneEvery-th insert
// of its verdict, prunes the verdict to the newest MaxIdentityProfiles
// rows in the same round trip.
func (s *Store) RecordIdentityProfile(ctx context.Context, p IdentityProfile) error {
	if p.Verdict != VerdictAccepted && p.Verdict != VerdictRefused {
		return fmt.Errorf("%w: verdict must be accepted or refused", ErrInvalid)
	}
	seen := pgTime(p.SeenAt)
	if p.SeenAt.IsZero() {
		seen = s.nowUTC()
	}
	b := &pgx.Batch{}
	b.Queue(insertProfileSQL, seen, p.Verdict, clean(p.Rule, maxProfileText), clean(p.Alg, maxProfileText),
		clean(p.Kid, maxProfileText), clean(p.Typ, maxProfileText), clean(p.Iss, maxProfileText),
		cleanList(p.Aud, false), cleanList(p.Claims, false), p.ClaimCount, millis(p.Age), millis(p.Lifetime),
		cleanList(p.UnknownFields, true))
	slot := 0
	if p.Verdict == VerdictRefused {
		slot = 1
	}
	if s.profileWrites[slot].Add(1)%profilePruneEvery == 0 {
		b.Queue(pruneProfilesSQL, p.Verdict, MaxIdentityProfiles)
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("%w: record identity profile: %w", ErrDatabase, err)
	}
	return nil
}

// ListIdentityProfiles returns the newest profiles of one verdict, newest
// first, at most limit (1 to MaxIdentityProfiles).
func (s *Store) ListIdentityProfiles(ctx context.Context, verdict string, limit int) ([]IdentityProfile, error) {
	limit = min(max(limit, 1), MaxIdentityProfiles)
	rows, _ := s.pool.Query(ctx, `SELECT id, seen_at, verdict, rule, alg, kid, typ, iss, aud, claims,
		claim_count, age_ms, lifetime_ms, unknown_fields
		FROM identity_profiles WHERE verdict = $1 ORDER BY id DESC LIMIT $2`, verdict, limit)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (IdentityProfile, error) {
		var p IdentityProfile
		var age, life *int64
		err := r.Scan(&p.ID, &p.SeenAt, &p.Verdict, &p.Rule, &p.Alg, &p.Kid, &p.Typ, &p.Iss, &p.Aud,
			&p.Claims, &p.ClaimCount, &age, &life, &p.UnknownFields)
		p.Age, p.Lifetime = duration(age), duration(life)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: list identity profiles: %w", ErrDatabase, err)
	}
	return out, nil
}

// cleanList bounds a list of names for a text[] column; nil stays NULL
// when keepNil, else becomes the empty array.
func cleanList(in []string, keepNil bool) []string {
	if in == nil {
		if keepNil {
			return nil
		}
		return []string{}
	}
	out := make([]string, 0, min(len(in), maxProfileNames))
	for i, s := range in {
		if i == maxProfileNames {
			break
		}
		out = append(out, clean(s, maxProfileText))
	}
	return out
}

func millis(d *time.Duration) *int64 {
	if d == nil {
		return nil
	}
	ms := d.Milliseconds()
	return &ms
}

func duration(ms *int64) *time.Duration {
	if ms == nil {
		return nil
	}
	d := time.Duration(*ms) * time.Millisecond
	return &d
}
