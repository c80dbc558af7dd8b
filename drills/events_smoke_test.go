//go:build !drills

package drills

import (
	"testing"
	"time"
)

// The event drills scaled down for the normal test run.
func TestEventsReceiverDownSmoke(t *testing.T) { t.Parallel(); drillEventsReceiverDown(t, 100, 10) }
func TestEventsDBOutageSmoke(t *testing.T)     { t.Parallel(); drillEventsDBOutage(t, 200, 2*time.Second) }
