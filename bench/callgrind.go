package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
)

// Instruction counts are the noise-free cross-check of CPU per request:
// the server runs under `valgrind --tool=callgrind` with instrumentation
// off until the measured window, which is sequential requests on one
// keep-alive connection. The count does not depend on what else the
// machine runs; it weighs every instruction alike (no cache misses, no
// system time), so it is a second opinion, not the figure itself.

// callgrindWarmup and callgrindRequests are the sequential requests before
// and in the counted window.
const callgrindWarmup = 200

// callgrindEnv makes a Go program runnable under callgrind (the runtime's
// asynchronous preemption signals trip an assertion in callgrind's signal
// handling) and its count repeatable: with the collector off no collection
// cycle falls into one window and not another (a few hundred MB of garbage
// over a window is nothing to this machine). The CPU rows are where the
// collector's cost is counted.
var callgrindEnv = []string{"GODEBUG=asyncpreemptoff=1", "GOGC=off"}

// callgrind is a server process running under callgrind.
type callgrind struct {
	child *harness.Child
	out   string // callgrind's output file prefix
	dumps int
}

// valgrindPath returns valgrind and callgrind_control, or ok false when
// either is missing (the rows then say not measured).
func valgrindPath() (valgrind, control string, ok bool) {
	v, err1 := exec.LookPath("valgrind")
	c, err2 := exec.LookPath("callgrind_control")
	return v, c, err1 == nil && err2 == nil
}

// callgrindArgs is the command line that runs binary args under callgrind
// through env(1), which sets callgrindEnv and execs valgrind in the same
// process, so the child's pid is the measured program's.
func callgrindArgs(valgrind, out string, binary string, args ...string) []string {
	cmd := append(append([]string{}, callgrindEnv...), valgrind, "--tool=callgrind", "--instr-atstart=no",
		"--callgrind-out-file="+out, binary)
	return append(cmd, args...)
}

// callgrindIdle is the idle window counted before each request window:
// the broker's background work (River's job polling, the listener's
// pings) goes on under callgrind at the pace of wall time, fifty times
// slower than the requests, so a request window would count far more of
// it than a normal run does. Its rate in the idle window is subtracted.
const callgrindIdle = 3 * time.Second

// callgrindCount is one request window's instruction counts.
type callgrindCount struct {
	// PerRequest is the window's instructions, less the idle rate times
	// the window's length, per request; Raw is without the subtraction.
	PerRequest, Raw float64
	// IdlePerSecond is the background rate subtracted.
	IdlePerSecond float64
}

// count runs n sequential calls of op after callgrindWarmup uncounted ones
// and an idle window, and returns the instructions per call.
func (c *callgrind) count(ctx context.Context, control string, n int, op loadgen.Op) (callgrindCount, error) {
	one := loadgen.Config{Workers: 1, MaxOps: callgrindWarmup, OpTimeout: time.Minute}
	if res, err := loadgen.Run(ctx, one, op); err != nil || res.Errors > 0 {
		return callgrindCount{}, errors.Join(err, res.FirstError)
	}
	if err := c.control(ctx, control, "--instr=on"); err != nil {
		return callgrindCount{}, err
	}
	idleStart := time.Now()
	select {
	case <-ctx.Done():
		return callgrindCount{}, ctx.Err()
	case <-time.After(callgrindIdle):
	}
	// --dump writes the counts since the last dump and zeroes them.
	if err := c.control(ctx, control, "--dump"); err != nil {
		return callgrindCount{}, err
	}
	idleTime := time.Since(idleStart)
	idle, err := c.lastDump()
	if err != nil {
		return callgrindCount{}, err
	}
	one.MaxOps = int64(n)
	reqStart := time.Now()
	res, err := loadgen.Run(ctx, one, op)
	if err == nil && res.Errors > 0 {
		err = res.FirstError
	}
	if err != nil {
		return callgrindCount{}, err
	}
	if err := c.control(ctx, control, "--dump"); err != nil {
		return callgrindCount{}, err
	}
	reqTime := time.Since(reqStart)
	if err := c.control(ctx, control, "--instr=off"); err != nil {
		return callgrindCount{}, err
	}
	total, err := c.lastDump()
	if err != nil {
		return callgrindCount{}, err
	}
	rate := float64(idle) / idleTime.Seconds()
	ops := float64(res.Ops)
	return callgrindCount{PerRequest: (float64(total) - rate*reqTime.Seconds()) / ops, Raw: float64(total) / ops,
		IdlePerSecond: rate}, nil
}

func (c *callgrind) control(ctx context.Context, control, arg string) error {
	if out, err := exec.CommandContext(ctx, control, arg, strconv.Itoa(c.child.PID)).CombinedOutput(); err != nil {
		return fmt.Errorf("callgrind_control %s: %w\n%s", arg, err, out)
	}
	return nil
}

// lastDump reads the total of the dump just written.
func (c *callgrind) lastDump() (int64, error) {
	c.dumps++
	return callgrindTotal(fmt.Sprintf("%s.%d", c.out, c.dumps))
}

// callgrindTotal reads the "totals:" line of a callgrind dump.
func callgrindTotal(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "totals: "); ok {
			return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no totals line in %s", path)
}

// callgrindOut is the output file prefix of one callgrind run; callgrind
// adds ".N" for the Nth dump.
func (r *runner) callgrindOut(name string) string {
	return filepath.Join(r.tmp, "callgrind."+name)
}

// instructionCounts are the callgrind figures of the cached token path.
type instructionCounts struct {
	echo, json, grpc callgrindCount
}

// countInstructions measures the bare Echo server and the broker (its
// Connect-JSON and gRPC GetToken) under callgrind, n requests each.
func (r *runner) countInstructions(ctx context.Context, n int, answerFile string,
	jsonOp func(url string) loadgen.Op, grpcOp func(url string) loadgen.Op) (instructionCounts, error) {
	var out instructionCounts
	valgrind, control, _ := valgrindPath()
	env, err := exec.LookPath("env")
	if err != nil {
		return out, err
	}
	addr, err := harness.FreePort()
	if err != nil {
		return out, err
	}
	echoOut := r.callgrindOut("echobaseline")
	srv, err := harness.StartServer(ctx, env, callgrindArgs(valgrind, echoOut, r.echoBinary, addr, answerFile), addr,
		filepath.Join(r.tmp, "echobaseline-callgrind.log"))
	if err != nil {
		return out, err
	}
	cg := &callgrind{child: srv, out: echoOut}
	out.echo, err = cg.count(ctx, control, n, jsonOp("http://"+addr))
	_ = srv.Kill() // no state, nothing to flush: the dump is written
	if err != nil {
		return out, fmt.Errorf("bare Echo under callgrind: %w", err)
	}

	brokerOut := r.callgrindOut("broker")
	child, err := r.startBrokerAs(ctx, nil, env, callgrindArgs(valgrind, brokerOut, r.binary, "serve", "--migrate=false"), 5*time.Minute)
	if err != nil {
		return out, err
	}
	defer func() { _ = child.Kill() }() // the counts are dumped; a graceful stop under callgrind takes long
	if _, err := child.WaitReady(ctx); err != nil {
		return out, err
	}
	cg = &callgrind{child: child, out: brokerOut}
	if out.json, err = cg.count(ctx, control, n, jsonOp(child.InternalURL())); err != nil {
		return out, fmt.Errorf("broker under callgrind, Connect-JSON: %w", err)
	}
	if out.grpc, err = cg.count(ctx, control, n, grpcOp(child.InternalURL())); err != nil {
		return out, fmt.Errorf("broker under callgrind, gRPC: %w", err)
	}
	return out, nil
}
