package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
)

// ProfileMode says when a phase is profiled.
type ProfileMode int

// Profile modes.
const (
	// ProfileOff never profiles.
	ProfileOff ProfileMode = iota
	// ProfileMissed profiles a phase that missed its target.
	ProfileMissed
	// ProfileAll profiles every profiled phase (tests use it to exercise
	// the path).
	ProfileAll
)

// serverRoot is the root of every server-side goroutine of net/http: a
// profile focused on it leaves out the load generator sharing the process.
const serverRoot = `net/http\.\(\*conn\)\.serve`

// service is a broker under load, child process or in-process.
type service struct {
	PublicURL, InternalURL string
}

// opMaker makes a phase's operation against a broker; it is called once
// for the child and again for the profiled in-process run.
type opMaker func(service) (loadgen.Op, error)

// runProfiled runs the load made by mkOp against the child broker,
// reading the CPU time of the child and of the bench process. When
// the result misses its target (ok false) and the mode asks for it, the
// same load is run again against an in-process broker, built from the same
// packages as `serve`, under a CPU profile, and the top functions of its
// request path go into the report. The child process itself cannot be
// profiled: serve exposes no pprof endpoint.
func (r *runner) runProfiled(ctx context.Context, title string, child *harness.Child, cfg loadgen.Config,
	mkOp opMaker, ok func(cpuResult) bool) (cpuResult, error) {
	op, err := mkOp(service{PublicURL: child.PublicURL(), InternalURL: child.InternalURL()})
	if err != nil {
		return cpuResult{}, err
	}
	// CPU of the child (the server) and of the bench process (the client).
	res, err := runCPU(ctx, cfg, op, child.PID, os.Getpid())
	if err != nil {
		return res, err
	}
	if r.profiles(!ok(res)) {
		if err := r.profileInProcess(ctx, title, cfg, mkOp); err != nil {
			return res, fmt.Errorf("profiling %s: %w", title, err)
		}
	}
	return res, nil
}

// profiles reports whether a load is to be profiled in process, given
// whether it missed its target.
func (r *runner) profiles(missed bool) bool {
	return r.opts.Profile == ProfileAll || (r.opts.Profile == ProfileMissed && missed)
}

func (r *runner) profileInProcess(ctx context.Context, title string, cfg loadgen.Config, mkOp opMaker) error {
	r.log.Info("profiling in-process", "phase", title)
	logFile, err := os.Create(filepath.Join(r.tmp, "inprocess.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	svc, err := harness.StartService(harness.ServiceConfig{
		DatabaseURL: r.dbURL, Keys: r.keys, JWKSURL: r.sim.JWKSURL(), AuthURL: r.sim.URL,
		Issuer: issuer, Audience: audience,
		// serve's default logging: JSON at info, one line per request.
		Logger: slog.New(slog.NewJSONHandler(logFile, nil)),
	})
	if err != nil {
		return err
	}
	defer svc.Close()
	if err := svc.WaitReady(ctx); err != nil {
		return err
	}
	op, err := mkOp(service{PublicURL: svc.PublicURL, InternalURL: svc.InternalURL})
	if err != nil {
		return err
	}
	path := filepath.Join(r.tmp, "cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	res, err := loadgen.Run(ctx, cfg, op)
	pprof.StopCPUProfile()
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var tops []string
	for _, args := range [][]string{
		{"-top", "-cum", "-nodecount=40"}, // where the request's time goes, stage by stage
		{"-top", "-nodecount=15"},         // the leaf functions that burn it
	} {
		args = append([]string{"tool", "pprof"}, append(args, "-focus="+serverRoot, path)...)
		out, err := exec.CommandContext(pctx, "go", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go tool pprof: %w\n%s", err, out)
		}
		tops = append(tops, trimProfileHeader(string(out)))
	}
	r.report.Profiles = append(r.report.Profiles, Profile{
		Title: fmt.Sprintf("%s — in-process broker under the same load (%s); request path only (pprof -focus %s), by cumulative then flat time",
			title, res, serverRoot),
		Top: strings.Join(tops, "\n"),
	})
	return nil
}

// trimProfileHeader drops pprof's file and build lines, keeping the
// sample summary and the table.
func trimProfileHeader(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "Showing nodes") || strings.HasPrefix(l, "Active filters") {
			return strings.Join(lines[i:], "\n")
		}
	}
	return s
}
