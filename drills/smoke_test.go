//go:build !drills

package drills

import (
	"testing"
	"time"
)

// The drills scaled down to seconds, run by `make test`. They assert the
// same invariants as the full drills and no wall-clock threshold.

func TestDrillDatabaseOutage(t *testing.T) {
	t.Parallel()
	drillDatabaseOutage(t, dbOutage{callbacks: 200, workers: 8, block: time.Second})
}

func TestDrillAuthOutage(t *testing.T) {
	t.Parallel()
	drillAuthOutage(t, authOutage{outage: 2 * time.Minute, lead: 90 * time.Second, margin: time.Minute, step: 5 * time.Second})
}

func TestDrillJWKSOutage(t *testing.T) {
	t.Parallel()
	drillJWKSOutage(t, jwksOutage{flood: 1000, workers: 8, tick: 10 * time.Millisecond})
}

func TestDrillKill(t *testing.T) {
	t.Parallel()
	drillKill(t, kill{callbacks: 400, killAfter: 100, workers: 4, tokens: 2})
}

func TestDrillSoak(t *testing.T) {
	t.Parallel()
	drillSoak(t, soak{duration: soakDuration(t, 3*time.Second), workers: 4, interval: 5 * time.Millisecond})
}

func TestDrillStampede(t *testing.T) {
	t.Parallel()
	drillStampede(t, 1000, 1)
}
