// Package loadgen is the closed-loop load generator of the benchmarks and
// drills: a fixed number of workers, each sending its next request only when
// the previous one has answered, with every latency recorded in an HDR
// histogram. A run is bounded by time and by count and stops by itself; the
// HTTP transport it offers dials loopback addresses only.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: 1 µs to 1 min at 3 significant digits. A latency above
// the top is recorded as the top, so a stuck request still shows in p100.
const (
	histMin     = int64(time.Microsecond)
	histMax     = int64(time.Minute)
	histSigFigs = 3
)

// ErrStop, returned by an Op, ends its worker without counting the call: the
// op has run out of work (e.g. of pre-signed requests).
var ErrStop = errors.New("loadgen: no more work")

// Op is one request. worker is the worker's index, so an op can use
// per-worker state (a connection, a cursor) without locking.
type Op func(ctx context.Context, worker int) error

// Config bounds a run. Workers and at least one of Duration or MaxOps are
// required.
type Config struct {
	// Workers is the number of concurrent workers; with a transport that
	// keeps one connection per worker it is also the number of connections.
	Workers int
	// Warmup runs the load without recording it, so that connections,
	// caches and the runtime reach their steady state first.
	Warmup time.Duration
	// Duration is how long the measured phase lasts (0: no time bound).
	Duration time.Duration
	// MaxOps bounds the number of measured calls (0: no count bound).
	MaxOps int64
	// OpTimeout bounds each call (default 10 s).
	OpTimeout time.Duration
	// Interval, when positive, paces each worker to at most one call per
	// Interval (a soak at a steady rate instead of flat out).
	Interval time.Duration
	// Now is the clock (default time.Now); tests pass a fake one.
	Now func() time.Time
}

// Result is what a run measured. Only calls started in the measured phase
// count.
type Result struct {
	Workers int
	// Ops is the number of calls that succeeded, Errors of those that failed.
	Ops, Errors int64
	// Elapsed is from the start of the measured phase to the end of its last
	// call.
	Elapsed time.Duration
	// FirstError is the first failure seen, for the report.
	FirstError error
	hist       *hdrhistogram.Histogram
}

// Throughput is successful calls per second of the measured phase.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// ErrorRate is the share of measured calls that failed.
func (r Result) ErrorRate() float64 {
	if n := r.Ops + r.Errors; n > 0 {
		return float64(r.Errors) / float64(n)
	}
	return 0
}

// Quantile is the latency at percentile p (0-100) of the successful calls.
func (r Result) Quantile(p float64) time.Duration {
	if r.hist == nil {
		return 0
	}
	return time.Duration(r.hist.ValueAtQuantile(p))
}

// Mean is the mean latency of the successful calls.
func (r Result) Mean() time.Duration {
	if r.hist == nil {
		return 0
	}
	return time.Duration(r.hist.Mean())
}

// Max is the highest latency recorded.
func (r Result) Max() time.Duration {
	if r.hist == nil {
		return 0
	}
	return time.Duration(r.hist.Max())
}

// String summarises the result on one line.
func (r Result) String() string {
	return fmt.Sprintf("%d ok, %d errors in %v (%.0f/s), p50 %v, p99 %v, max %v",
		r.Ops, r.Errors, r.Elapsed.Round(time.Millisecond), r.Throughput(),
		r.Quantile(50), r.Quantile(99), r.Max())
}

// Merge adds up runs of the same load (e.g. short runs alternated with a
// baseline's): their calls, errors, measured time and latencies. The
// first run's worker count and first error are kept.
func Merge(runs []Result) Result {
	var out Result
	for _, r := range runs {
		if out.hist == nil {
			out.Workers, out.FirstError = r.Workers, r.FirstError
			out.hist = hdrhistogram.New(histMin, histMax, histSigFigs)
		}
		if out.FirstError == nil {
			out.FirstError = r.FirstError
		}
		out.Ops, out.Errors, out.Elapsed = out.Ops+r.Ops, out.Errors+r.Errors, out.Elapsed+r.Elapsed
		if r.hist != nil {
			out.hist.Merge(r.hist)
		}
	}
	return out
}

// worker is one worker's private tally, merged when the run ends.
type worker struct {
	hist      *hdrhistogram.Histogram
	ops, errs int64
	lastEnd   time.Time
	firstErr  error
}

// Run drives op from cfg.Workers workers until the measured phase ends (by
// time or count), every worker has run out of work, or ctx ends. It returns
// an error only for a bad Config; failed calls are counted in the Result.
func Run(ctx context.Context, cfg Config, op Op) (Result, error) {
	if cfg.Workers <= 0 {
		return Result{}, errors.New("loadgen: Workers must be positive")
	}
	if cfg.Duration <= 0 && cfg.MaxOps <= 0 {
		return Result{}, errors.New("loadgen: a run needs a Duration or a MaxOps bound")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 10 * time.Second
	}
	start := cfg.Now()
	measureFrom := start.Add(cfg.Warmup)
	var deadline time.Time
	if cfg.Duration > 0 {
		deadline = measureFrom.Add(cfg.Duration)
	}
	var started atomic.Int64 // measured calls started, for MaxOps

	workers := make([]*worker, cfg.Workers)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{hist: hdrhistogram.New(histMin, histMax, histSigFigs)}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			runWorker(ctx, cfg, op, i, w, measureFrom, deadline, &started)
		}()
	}
	wg.Wait()

	res := Result{Workers: cfg.Workers, hist: hdrhistogram.New(histMin, histMax, histSigFigs)}
	var end time.Time
	for _, w := range workers {
		res.hist.Merge(w.hist)
		res.Ops += w.ops
		res.Errors += w.errs
		if w.lastEnd.After(end) {
			end = w.lastEnd
		}
		if res.FirstError == nil {
			res.FirstError = w.firstErr
		}
	}
	if !end.IsZero() {
		res.Elapsed = end.Sub(measureFrom)
	}
	return res, nil
}

func runWorker(ctx context.Context, cfg Config, op Op, i int, w *worker, measureFrom, deadline time.Time, started *atomic.Int64) {
	var next time.Time // pacing
	for ctx.Err() == nil {
		t0 := cfg.Now()
		if !deadline.IsZero() && !t0.Before(deadline) {
			return
		}
		if cfg.Interval > 0 {
			if wait := next.Sub(t0); wait > 0 {
				if !sleep(ctx, wait) {
					return
				}
				t0 = cfg.Now()
			}
			next = t0.Add(cfg.Interval)
		}
		measured := !t0.Before(measureFrom)
		if measured && cfg.MaxOps > 0 && started.Add(1) > cfg.MaxOps {
			return
		}
		octx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
		err := op(octx, i)
		cancel()
		if errors.Is(err, ErrStop) {
			return
		}
		t1 := cfg.Now()
		if !measured {
			continue
		}
		w.lastEnd = t1
		if err != nil {
			if ctx.Err() != nil {
				return // the run was cancelled; this call does not count
			}
			w.errs++
			if w.firstErr == nil {
				w.firstErr = err
			}
			continue
		}
		w.ops++
		d := min(max(int64(t1.Sub(t0)), histMin), histMax)
		_ = w.hist.RecordValue(d) // within bounds by construction
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
