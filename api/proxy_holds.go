package api

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// RateLimitStore keeps GraphQL holds fleet-wide; *store.Store satisfies it.
type RateLimitStore interface {
	// RateLimitHold returns the install's recorded reset time (zero: none).
	RateLimitHold(ctx context.Context, irisAppID, accountID string) (time.Time, error)
	// HoldRateLimit records a reset time; a hold only ever grows.
	HoldRateLimit(ctx context.Context, irisAppID, accountID string, resetAt, now time.Time) error
}

// holdRecheck is how long a replica trusts its last look at an install's
// hold before asking Postgres again. A hold set elsewhere is therefore seen
// at the latest this long after another replica recorded it (at once by a
// replica that has not looked recently), at the cost of at most one
// indexed lookup per install and replica per interval, and only for
// GraphQL calls.
const holdRecheck = time.Second

// maxHoldEntries bounds the in-memory view; past it, entries with no live
// hold are swept.
const maxHoldEntries = 100_000

// holds is one replica's view of the fleet's GraphQL holds.
type holds struct {
	store  RateLimitStore // nil: holds are this process's own
	now    func() time.Time
	logger *slog.Logger

	mu sync.Mutex
	m  map[holdKey]holdEntry
}

type holdKey struct{ app, account string }

type holdEntry struct {
	resetAt time.Time // zero: no hold known
	checked time.Time // when the store was last asked
}

func newHolds(st RateLimitStore, now func() time.Time, logger *slog.Logger) *holds {
	return &holds{store: st, now: now, logger: logger, m: map[holdKey]holdEntry{}}
}

// until returns the install's reset time if a hold is in force now.
func (h *holds) until(ctx context.Context, app, account string) (time.Time, bool) {
	now := h.now()
	k := holdKey{app, account}
	h.mu.Lock()
	e, ok := h.m[k]
	h.mu.Unlock()
	// A hold this replica knows of stands until it ends: holds only grow.
	if ok && now.Before(e.resetAt) {
		return e.resetAt, true
	}
	if h.store == nil || (ok && now.Sub(e.checked) < holdRecheck) {
		return time.Time{}, false
	}
	resetAt, err := h.store.RateLimitHold(ctx, app, account)
	if err != nil {
		// Fail open: Trackunit still enforces its budget and says so, and a
		// database outage must not stop every GraphQL call.
		h.logger.WarnContext(ctx, "proxy: reading the rate-limit hold failed; forwarding", "error", err.Error())
	}
	h.mu.Lock()
	if cur := h.m[k]; cur.resetAt.After(resetAt) {
		resetAt = cur.resetAt
	}
	h.putLocked(k, holdEntry{resetAt: resetAt, checked: now}, now)
	h.mu.Unlock()
	return resetAt, now.Before(resetAt)
}

// hold records a reset time here and in the store, so every replica
// honours it. It returns once the store has it (or has failed to take it).
func (h *holds) hold(ctx context.Context, app, account string, resetAt time.Time) {
	now := h.now()
	k := holdKey{app, account}
	h.mu.Lock()
	e := h.m[k]
	if resetAt.After(e.resetAt) {
		e.resetAt = resetAt
	}
	h.putLocked(k, e, now)
	h.mu.Unlock()
	if h.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := h.store.HoldRateLimit(ctx, app, account, resetAt, now); err != nil {
		h.logger.ErrorContext(ctx, "proxy: recording the rate-limit hold failed; only this replica holds", "error", err.Error())
	}
}

func (h *holds) putLocked(k holdKey, e holdEntry, now time.Time) {
	if _, ok := h.m[k]; !ok && len(h.m) >= maxHoldEntries {
		for k, e := range h.m {
			if !now.Before(e.resetAt) {
				delete(h.m, k)
			}
		}
	}
	h.m[k] = e
}
