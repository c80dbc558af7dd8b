package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
)

// cpuResult is a load run with the CPU time the watched processes spent
// during its measured window.
type cpuResult struct {
	loadgen.Result
	// CPU is per watched process, over the whole measured window.
	CPU []time.Duration
}

// perRequest is process i's CPU per request served in the window (0 when
// nothing was served).
func (c cpuResult) perRequest(i int) time.Duration {
	n := c.Ops + c.Errors
	if n == 0 || i >= len(c.CPU) {
		return 0
	}
	return c.CPU[i] / time.Duration(n)
}

// runCPU runs the warm-up as a load run of its own, then the measured run,
// reading the utime+stime of every pid (the server, and where useful the
// bench process for the client's share) just before and just after it.
func runCPU(ctx context.Context, cfg loadgen.Config, op loadgen.Op, pids ...int) (cpuResult, error) {
	if err := warmUp(ctx, cfg, op); err != nil {
		return cpuResult{}, err
	}
	cfg.Warmup = 0
	before, err := cpuTimes(pids)
	if err != nil {
		return cpuResult{}, err
	}
	res, err := loadgen.Run(ctx, cfg, op)
	if err != nil {
		return cpuResult{Result: res}, err
	}
	after, err := cpuTimes(pids)
	if err != nil {
		return cpuResult{Result: res}, err
	}
	out := cpuResult{Result: res, CPU: make([]time.Duration, len(pids))}
	for i := range pids {
		out.CPU[i] = after[i] - before[i]
	}
	return out, nil
}

// warmUp runs cfg's warm-up (if any) as a load run of its own, so the
// measured window that follows starts with warm connections.
func warmUp(ctx context.Context, cfg loadgen.Config, op loadgen.Op) error {
	if cfg.Warmup <= 0 {
		return nil
	}
	warm := loadgen.Config{Workers: cfg.Workers, Duration: cfg.Warmup, OpTimeout: cfg.OpTimeout, Interval: cfg.Interval}
	_, err := loadgen.Run(ctx, warm, op)
	return err
}

func cpuTimes(pids []int) ([]time.Duration, error) {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		t, err := harness.CPUTime(pid)
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}

// cpuRatio renders a/b.
func cpuRatio(a, b time.Duration) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", float64(a)/float64(b))
}

// resultCPU records a run's raw line and its CPU per request.
func (r *Report) resultCPU(phase, what string, res cpuResult, names ...string) {
	r.result(phase, what, res.Result)
	for i, name := range names {
		r.detail(phase, "%s: %s CPU %v over the window, %s per request", what, name,
			res.CPU[i].Round(10*time.Millisecond), us(res.perRequest(i)))
	}
}

// cpuLoad is one load of an interleaved run and the processes whose CPU
// it is charged with.
type cpuLoad struct {
	op   loadgen.Op
	pids []int
}

// runInterleaved warms each load up, then runs the loads in turn, rounds
// times, each for cfg.Duration/rounds, and returns each load's runs merged
// with their CPU times summed. A change in what else the machine runs then
// falls on every load alike, which a run of each after the other does not
// give on a shared machine.
func runInterleaved(ctx context.Context, cfg loadgen.Config, rounds int, loads []cpuLoad) ([]cpuResult, error) {
	for _, l := range loads {
		if err := warmUp(ctx, cfg, l.op); err != nil {
			return nil, err
		}
	}
	round := cfg
	round.Warmup, round.Duration = 0, cfg.Duration/time.Duration(rounds)
	runs := make([][]loadgen.Result, len(loads))
	out := make([]cpuResult, len(loads))
	for range rounds {
		for i, l := range loads {
			res, err := runCPU(ctx, round, l.op, l.pids...)
			if err != nil {
				return nil, err
			}
			runs[i] = append(runs[i], res.Result)
			if out[i].CPU == nil {
				out[i].CPU = make([]time.Duration, len(l.pids))
			}
			for j, c := range res.CPU {
				out[i].CPU[j] += c
			}
		}
	}
	for i := range loads {
		out[i].Result = loadgen.Merge(runs[i])
	}
	return out, nil
}
