//go:build drills

package drills

import (
	"testing"
	"time"
)

// The full drills (`make drills`): minutes, one at a time, so that each
// has the machine to itself.

func TestDrillDatabaseOutage(t *testing.T) {
	drillDatabaseOutage(t, dbOutage{callbacks: 5000, workers: 16, block: 10 * time.Second})
}

func TestDrillAuthOutage(t *testing.T) {
	// The contract's default margin (5m) outlasts a 2-minute outage, so no
	// token would expire during it; a 1-minute margin lets one expire.
	drillAuthOutage(t, authOutage{outage: 2 * time.Minute, lead: 90 * time.Second, margin: time.Minute, step: 250 * time.Millisecond})
}

func TestDrillJWKSOutage(t *testing.T) {
	drillJWKSOutage(t, jwksOutage{flood: 10_000, workers: 16, tick: 10 * time.Millisecond})
}

func TestDrillKill(t *testing.T) {
	drillKill(t, kill{callbacks: 20_000, killAfter: 5000, workers: 16, tokens: 8})
}

func TestDrillSoak(t *testing.T) {
	drillSoak(t, soak{duration: soakDuration(t, 10*time.Minute), workers: 8, interval: 5 * time.Millisecond})
}

func TestDrillStampede(t *testing.T) {
	t.Run("one broker", func(t *testing.T) { drillStampede(t, 1000, 1) })
	t.Run("three brokers", func(t *testing.T) { drillStampede(t, 1000, 3) })
}
