package store_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// BenchmarkApplyInstallEvent applies events from 16 goroutines over the
// default pool (16 connections) and reports events/s. The target is 1,000
// installs/s on 2 cores.
//   - first: the first INSTALLED of distinct installs (one statement)
//   - duplicate: a repeat with the same credentials (row lock, no write)
//   - replace: new credentials (row lock, write, NOTIFY; Postgres
//     serialises the commits of notifying transactions)
func BenchmarkApplyInstallEvent(b *testing.B) {
	for _, mode := range []string{"first", "duplicate", "replace"} {
		b.Run(mode, func(b *testing.B) {
			e := newEnv(b)
			c := testkit.Context(b)
			const installs = 512 // pre-created for duplicate and replace
			if mode != "first" {
				for i := range installs {
					if _, err := e.store.ApplyInstallEvent(c, installed(acct(i), "cid", "secret", t0)); err != nil {
						b.Fatal(err)
					}
				}
			}
			var n atomic.Int64
			b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(n.Add(1))
					var ev store.InstallEvent
					switch mode {
					case "first":
						ev = installed(acct(installs+i), "cid", "secret", t0)
					case "duplicate":
						ev = installed(acct(i%installs), "cid", "secret", t0)
					case "replace":
						ev = installed(acct(i%installs), "cid", fmt.Sprint("secret-", i), t0)
					}
					if out, err := e.store.ApplyInstallEvent(c, ev); err != nil || out != store.OutcomeInstalled {
						b.Errorf("ApplyInstallEvent = %q, %v", out, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}
