//go:build drills

package drills

import (
	"testing"
	"time"
)

// The full event drills (`make drills`).
func TestEventsReceiverDown(t *testing.T)  { drillEventsReceiverDown(t, 1000, 50) }
func TestEventsReplicaKilled(t *testing.T) { drillEventsReplicaKilled(t, 100) }
func TestEventsDBOutage(t *testing.T)      { drillEventsDBOutage(t, 1000, 10*time.Second) }
