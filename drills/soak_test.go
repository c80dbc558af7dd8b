package drills

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// soak is the size of the soak drill.
type soak struct {
	duration time.Duration
	workers  int
	interval time.Duration // per worker: the load is steady, not flat out
}

// soakDuration reads SOAK_DURATION, falling back to def.
func soakDuration(t *testing.T, def time.Duration) time.Duration {
	v := os.Getenv("SOAK_DURATION")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("SOAK_DURATION=%q is not a positive duration", v)
	}
	return d
}

// procSample is the broker's footprint at one moment.
type procSample struct {
	goroutines float64
	openFiles  int
	rss        int64
}

// drillSoak runs a steady mixed load (70% cached GetToken, 20% callbacks,
// half new installs and half repeats, 10% ListInstalls) against the broker
// for the duration and checks that nothing failed and that goroutines and
// open files at the end are where they were at the start.
func drillSoak(t *testing.T, p soak) {
	ctx := testkit.ContextWithin(t, p.duration+5*time.Minute)
	dbURL := testdb.NewDatabase(t)
	sim := newSim(t, trackunitsim.Options{})
	// ES256 signs fast enough to make callbacks on the fly for any length
	// of soak (JWTs expire, so they cannot all be made up front).
	if _, err := sim.Rotate("ES256"); err != nil {
		t.Fatal(err)
	}
	child := startChild(t, ctx, dbURL, newKeys(t), sim, nil)
	client := loadgen.HTTP1Client(p.workers)
	installs := harness.InstallClient(client, child.InternalURL())

	const tokenAccounts = 20
	known := make([]harness.Callback, 0, tokenAccounts)
	for range tokenAccounts {
		cb, err := harness.NewCallback(sim.Sim, harness.App, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := cb.PostInstalled(ctx, client, child.PublicURL()); err != nil {
			t.Fatal(err)
		}
		known = append(known, cb)
	}
	var n atomic.Int64
	op := func(ctx context.Context, _ int) error {
		i := n.Add(1)
		switch i % 10 {
		case 7: // a new install
			cb, err := harness.NewCallback(sim.Sim, harness.App, false)
			if err != nil {
				return err
			}
			return cb.PostInstalled(ctx, client, child.PublicURL())
		case 8: // a repeat delivery of an earlier install, newly signed
			cb, err := known[int(i/10)%len(known)].Resign(sim.Sim)
			if err != nil {
				return err
			}
			return cb.PostInstalled(ctx, client, child.PublicURL())
		case 9:
			_, err := harness.ListInstalls(ctx, installs, 50, "")
			return err
		default:
			a, err := harness.GetTokenJSON(ctx, client, child.InternalURL(),
				harness.TokenRequestBody(harness.App, known[int(i)%tokenAccounts].AccountID))
			if err == nil && a.HTTPStatus != http.StatusOK {
				err = fmt.Errorf("GetToken answered %d %s", a.HTTPStatus, a.Code)
			}
			return err
		}
	}
	cfg := loadgen.Config{Workers: p.workers, Interval: p.interval}

	// Warm up, so connections and caches exist and the background work
	// (River's producers, the pool's connections) has reached its steady
	// size, then sample between runs with every client connection open and
	// idle. Under 2 s the short soak of make test sampled the start before
	// that and saw 10-13 goroutines more at the end than at the start; a
	// 20 s soak with its 5 s warm-up ends where it starts.
	warm := cfg
	warm.Duration = min(max(p.duration/4, 2*time.Second), 5*time.Second)
	if res, err := loadgen.Run(ctx, warm, op); err != nil || res.Errors > 0 {
		t.Fatalf("warm-up: %v %v", err, res.FirstError)
	}
	start := sample(t, ctx, child)
	cfg.Duration = p.duration
	res, err := loadgen.Run(ctx, cfg, op)
	if err != nil {
		t.Fatal(err)
	}
	end := sample(t, ctx, child)

	if res.Errors > 0 {
		t.Errorf("%d of %d calls failed (first: %v)", res.Errors, res.Ops+res.Errors, res.FirstError)
	}
	// Flat: allow a little for the runtime's own goroutines and a Postgres
	// connection or two opening or closing.
	if margin := max(10, start.goroutines/5); end.goroutines > start.goroutines+margin {
		t.Errorf("goroutines grew from %.0f to %.0f over the soak", start.goroutines, end.goroutines)
	}
	if margin := max(10, start.openFiles/5); end.openFiles > start.openFiles+margin {
		t.Errorf("open files grew from %d to %d over the soak", start.openFiles, end.openFiles)
	}
	t.Logf("soak: %v, %d workers at most one call per %v each: %s", p.duration, p.workers, p.interval, res)
	t.Logf("  error rate %.4f%%; goroutines %.0f → %.0f; open files %d → %d; RSS %.1f → %.1f MiB",
		100*res.ErrorRate(), start.goroutines, end.goroutines, start.openFiles, end.openFiles,
		float64(start.rss)/(1<<20), float64(end.rss)/(1<<20))
}

func sample(t *testing.T, ctx context.Context, c *harness.Child) procSample {
	t.Helper()
	g, err := harness.ScrapeMetric(ctx, &http.Client{Timeout: 10 * time.Second}, c.InternalURL()+"/metrics", "go_goroutines")
	if err != nil {
		t.Fatal(err)
	}
	files, err := c.OpenFiles()
	if err != nil {
		t.Fatal(err)
	}
	rss, err := c.RSS()
	if err != nil {
		t.Fatal(err)
	}
	return procSample{goroutines: g, openFiles: files, rss: rss}
}
