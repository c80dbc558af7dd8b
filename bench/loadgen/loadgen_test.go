package loadgen

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

type summary struct {
	Ops, Errors int64
	Elapsed     time.Duration
	P50, P100   time.Duration
}

// summarize rounds latencies to two significant digits: the histogram
// keeps three, reporting the top of a value's bucket.
func summarize(r Result) summary {
	return summary{Ops: r.Ops, Errors: r.Errors, Elapsed: r.Elapsed, P50: sig2(r.Quantile(50)), P100: sig2(r.Quantile(100))}
}

func sig2(d time.Duration) time.Duration {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(d), 'g', 2, 64), 64)
	return time.Duration(v)
}

func TestRunBounds(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		cfg  Config
		// op advances the fake clock by step and fails every failEvery-th call.
		step      time.Duration
		failEvery int64
		want      summary
	}{
		{
			name: "time bound, one worker",
			cfg:  Config{Workers: 1, Duration: 100 * time.Millisecond},
			step: time.Millisecond,
			want: summary{Ops: 100, Elapsed: 100 * time.Millisecond, P50: time.Millisecond, P100: time.Millisecond},
		},
		{
			name: "warm-up is not recorded",
			cfg:  Config{Workers: 1, Warmup: 20 * time.Millisecond, Duration: 50 * time.Millisecond},
			step: time.Millisecond,
			want: summary{Ops: 50, Elapsed: 50 * time.Millisecond, P50: time.Millisecond, P100: time.Millisecond},
		},
		{
			name: "count bound",
			cfg:  Config{Workers: 1, MaxOps: 7},
			step: 2 * time.Millisecond,
			want: summary{Ops: 7, Elapsed: 14 * time.Millisecond, P50: 2 * time.Millisecond, P100: 2 * time.Millisecond},
		},
		{
			name:      "errors counted apart",
			cfg:       Config{Workers: 1, MaxOps: 10},
			step:      time.Millisecond,
			failEvery: 5,
			want:      summary{Ops: 8, Errors: 2, Elapsed: 10 * time.Millisecond, P50: time.Millisecond, P100: time.Millisecond},
		},
		{
			name: "count bound shared by workers",
			cfg:  Config{Workers: 4, MaxOps: 40, Duration: time.Hour},
			step: 0, // the clock stands still: only the count ends the run
			want: summary{Ops: 40, P50: time.Microsecond, P100: time.Microsecond},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := testkit.NewClock(time.Unix(1_700_000_000, 0)) // moves only when an op says so, so time bounds are exact
			tc.cfg.Now = clock.Now
			var calls atomic.Int64
			res, err := Run(testkit.Context(t), tc.cfg, func(context.Context, int) error {
				n := calls.Add(1)
				clock.Advance(tc.step)
				if tc.failEvery > 0 && n%tc.failEvery == 0 {
					return boom
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, summarize(res)); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			if tc.failEvery > 0 && !errors.Is(res.FirstError, boom) {
				t.Errorf("FirstError = %v, want boom", res.FirstError)
			}
		})
	}
}

func TestRunStopsWhenOpsRunOut(t *testing.T) {
	var left atomic.Int64
	left.Store(25)
	res, err := Run(testkit.Context(t), Config{Workers: 3, Duration: time.Hour}, func(context.Context, int) error {
		if left.Add(-1) < 0 {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 25 || res.Errors != 0 {
		t.Errorf("Ops, Errors = %d, %d; want 25, 0", res.Ops, res.Errors)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(testkit.Context(t))
	var calls atomic.Int64
	res, err := Run(ctx, Config{Workers: 2, Duration: time.Hour}, func(ctx context.Context, _ int) error {
		if calls.Add(1) == 50 {
			cancel()
		}
		return ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 {
		t.Errorf("calls cut by the cancelled run counted as %d errors", res.Errors)
	}
}

func TestRunRefusesUnboundedConfig(t *testing.T) {
	for _, cfg := range []Config{{Workers: 1}, {Duration: time.Second}} {
		if _, err := Run(testkit.Context(t), cfg, func(context.Context, int) error { return nil }); err == nil {
			t.Errorf("Run(%+v) did not refuse", cfg)
		}
	}
}

func TestClientsDialLoopbackOnly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer srv.Close()
	for name, c := range map[string]*http.Client{"http1": HTTP1Client(2)} {
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatalf("%s: loopback: %v", name, err)
		}
		resp.Body.Close()
		// 192.0.2.1 is TEST-NET-1: never loopback, and never dialled.
		_, err = c.Get("http://192.0.2.1:80/")
		if !errors.Is(err, ErrNotLoopback) {
			t.Errorf("%s: non-loopback dial: %v, want ErrNotLoopback", name, err)
		}
	}
	_, err := H2CClient().Get("http://192.0.2.1:80/")
	if !errors.Is(err, ErrNotLoopback) {
		t.Errorf("h2c: non-loopback dial: %v, want ErrNotLoopback", err)
	}
}

// Merge adds the runs' calls, errors and time, and its quantiles are those
// of all the latencies together.
func TestMerge(t *testing.T) {
	fast, err := Run(context.Background(), Config{Workers: 1, MaxOps: 10}, func(context.Context, int) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	slow, err := Run(context.Background(), Config{Workers: 1, MaxOps: 30}, func(context.Context, int) error {
		time.Sleep(2 * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m := Merge([]Result{fast, slow})
	if m.Ops != 40 || m.Errors != 0 || m.Elapsed != fast.Elapsed+slow.Elapsed {
		t.Errorf("merged %d ops, %d errors in %v; want 40, 0, %v", m.Ops, m.Errors, m.Elapsed, fast.Elapsed+slow.Elapsed)
	}
	// 30 of the 40 latencies are the slow run's: p50 is among them, p10 is not.
	if m.Quantile(50) < 2*time.Millisecond || m.Quantile(10) >= 2*time.Millisecond {
		t.Errorf("merged p10 %v, p50 %v", m.Quantile(10), m.Quantile(50))
	}
	if Merge(nil).Quantile(50) != 0 {
		t.Error("an empty merge has latencies")
	}
}
