// Package bench owns the benchmarks behind `make bench`: it runs the real
// broker as a child process against a fresh database and the Trackunit
// simulator, measures each figure of the project's performance brief
// against a baseline taken in the same run with the same load generator,
// and renders the results table and docs/BENCHMARKS.md.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// Options configures a run.
type Options struct {
	// ServerURL is a Postgres server URL whose user may create databases
	// (default TEST_DATABASE_URL, else testdb.DefaultServerURL).
	ServerURL string
	// DBName is the throwaway database (default irisx_bench); it is dropped
	// at the end.
	DBName string
	// Quick scales every phase down to seconds (CI smoke).
	Quick bool
	// Command is the command line recorded in the report.
	Command string
	// Progress receives one line per step (default: discarded).
	Progress io.Writer
	// Profile says when to take a CPU profile of a phase's load against an
	// in-process broker and add its top functions to the report.
	Profile ProfileMode
	// Phases, when set, runs only the phases of these names.
	Phases []string
	// ListInstalls, when positive, replaces the scale's number of installs
	// bulk-loaded for the ListInstalls and start-time figures (10,000,000
	// in a full run).
	ListInstalls int
}

// grpcConns is the HTTP/2 connections the cached-token phase's gRPC load
// multiplexes its tokenConns calls on: eight calls per connection keeps
// one connection's framing from being the limit.
func (sc scale) grpcConns() int { return max(1, sc.tokenConns/8) }

// scale is the size of every phase.
type scale struct {
	warmup, measure time.Duration
	tokenConns      int
	ingestConns     int
	ingestCallbacks int
	stampede        int
	listInstalls    int // bulk-loaded installs under the ListInstalls deep page
	rssInstalls     int // installs each holding a cached token for the RSS figure
	listMeasure     time.Duration
	rssLoad         time.Duration
	identityKinds   []string
	eventsCallbacks int // pre-signed first installs per events run
	// callgrindRequests are the requests counted under callgrind.
	callgrindRequests int
}

var (
	fullScale = scale{
		warmup: 2 * time.Second, measure: 10 * time.Second,
		tokenConns: 64, ingestConns: 16, ingestCallbacks: 30_000, stampede: 1000,
		listInstalls: 10_000_000, rssInstalls: 100_000, listMeasure: 5 * time.Second, rssLoad: 5 * time.Second,
		identityKinds: []string{"RS256", "ES256", "EdDSA"}, callgrindRequests: 10_000,
		eventsCallbacks: 25_000,
	}
	quickScale = scale{
		warmup: 100 * time.Millisecond, measure: 400 * time.Millisecond,
		tokenConns: 8, ingestConns: 4, ingestCallbacks: 200, stampede: 200,
		listInstalls: 20_000, rssInstalls: 2_000, listMeasure: 200 * time.Millisecond, rssLoad: 300 * time.Millisecond,
		identityKinds: []string{"ES256"}, callgrindRequests: 100,
		eventsCallbacks: 300,
	}
)

// listPageSize is ListInstalls' default page size; the scale figure is
// about page 10,000 of it.
const listPageSize = 50

// runner holds what the phases share.
type runner struct {
	opts   Options
	sc     scale
	report *Report
	log    *slog.Logger

	tmp        string
	binary     string
	echoBinary string // the bare Echo baseline as a program of its own
	grpcBinary string // the bare grpc-go baseline, likewise
	keys       string
	dbURL      string
	sim        *harness.SimServer
	primary    *harness.Child
	// firstStart is the first start's time to ready, on the empty database.
	firstStart time.Duration
	logs       int // child log files handed out
}

// Run runs every phase and returns the report. A phase that cannot run is
// an error; a missed target is not (it is in the report).
func Run(ctx context.Context, opts Options) (*Report, error) {
	if opts.ServerURL == "" {
		opts.ServerURL = os.Getenv("TEST_DATABASE_URL")
	}
	if opts.ServerURL == "" {
		opts.ServerURL = testdb.DefaultServerURL
	}
	if opts.DBName == "" {
		opts.DBName = "irisx_bench"
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	r := &runner{opts: opts, sc: fullScale, log: slog.New(slog.NewTextHandler(opts.Progress, nil))}
	if opts.Quick {
		r.sc = quickScale
	}
	if opts.ListInstalls > 0 {
		r.sc.listInstalls = opts.ListInstalls
	}
	r.report = &Report{Started: time.Now(), Command: opts.Command, Quick: opts.Quick,
		Machine: harness.DescribeMachine(), Method: methodNotes(r.sc)}
	r.report.LoadBefore = loadAverage()

	err := r.run(ctx)
	r.report.LoadAfter = loadAverage()
	r.report.Finished = time.Now()
	return r.report, err
}

func loadAverage() [3]float64 {
	a, b, c, _ := harness.LoadAverage()
	return [3]float64{a, b, c}
}

func (r *runner) run(ctx context.Context) (err error) {
	if r.tmp, err = os.MkdirTemp("", "irisx-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(r.tmp)

	r.log.Info("building the broker")
	if r.binary, err = harness.BuildBroker(ctx, r.tmp); err != nil {
		return err
	}
	if r.echoBinary, err = harness.Build(ctx, r.tmp, "./bench/echobaseline"); err != nil {
		return err
	}
	if r.grpcBinary, err = harness.Build(ctx, r.tmp, "./bench/grpcbaseline"); err != nil {
		return err
	}
	if r.keys, err = harness.NewKeys(); err != nil {
		return err
	}
	r.log.Info("creating the database", "name", r.opts.DBName)
	if r.dbURL, err = testdb.CreateDatabase(ctx, r.opts.ServerURL, r.opts.DBName); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		err = errors.Join(err, testdb.DropDatabase(dctx, r.opts.ServerURL, r.opts.DBName))
	}()
	if r.report.Postgres, err = postgresVersion(ctx, r.dbURL); err != nil {
		return err
	}
	if r.sim, err = harness.StartSim(simOptions()); err != nil {
		return err
	}
	defer r.sim.Close()

	// The first start applies the migrations to the empty database.
	if r.primary, err = r.startBroker(ctx, nil); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopChild(r.primary)) }()
	start, err := r.primary.WaitReady(ctx)
	if err != nil {
		return err
	}
	r.firstStart = start
	r.report.detail("Start", "first start on an empty database (migrations applied): %v to /readyz 200", start.Round(time.Millisecond))

	for _, phase := range []struct {
		name string
		fn   func(context.Context) error
	}{
		{"identity", r.identityPhase},
		{"cached token", r.tokenPhase},
		{"install ingest", r.ingestPhase},
		{"stampede", r.stampedePhase},
		{"scale", r.scalePhase},
		{"iris proxy", r.proxyPhase},
		{"tracing", r.tracingPhase},
		{"events", r.eventsPhase},
	} {
		if len(r.opts.Phases) > 0 && !slices.Contains(r.opts.Phases, phase.name) {
			continue
		}
		r.log.Info("phase", "name", phase.name)
		if err := phase.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", phase.name, err)
		}
	}
	return nil
}

// startBroker starts a child broker on the bench database with extra
// environment on top of the rig's; args default to serve.
func (r *runner) startBroker(ctx context.Context, extra map[string]string, args ...string) (*harness.Child, error) {
	return r.startBrokerAs(ctx, extra, r.binary, args, 0)
}

// startBrokerAs is startBroker running binary with args (which then
// include the broker's path), waiting up to timeout (0: the default) for
// it to listen: the broker under a tool.
func (r *runner) startBrokerAs(ctx context.Context, extra map[string]string, binary string, args []string, timeout time.Duration) (*harness.Child, error) {
	env := harness.BrokerEnv(r.dbURL, r.keys, r.sim.JWKSURL(), r.sim.URL)
	env["IDENTITY_ISSUER"], env["IDENTITY_AUDIENCE"] = issuer, audience
	for k, v := range extra {
		env[k] = v
	}
	r.logs++
	return harness.StartChild(ctx, harness.ChildConfig{
		Binary: binary, Env: env, Args: args, LogPath: filepath.Join(r.tmp, fmt.Sprintf("broker-%d.log", r.logs)),
		StartTimeout: timeout,
	})
}

// stopChild stops a child gracefully; nil-safe so deferred stops of
// children already stopped are harmless.
func stopChild(c *harness.Child) error {
	if c == nil {
		return nil
	}
	if err := c.Stop(20 * time.Second); err != nil {
		return fmt.Errorf("stopping the broker: %w\n%s", err, c.LogTail(10))
	}
	return nil
}

func postgresVersion(ctx context.Context, dbURL string) (string, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var v string
	err = conn.QueryRow(ctx, "SHOW server_version").Scan(&v)
	return "PostgreSQL " + v, err
}

// Identity claims of the simulator's JWTs; the broker checks both, as a
// production deployment would.
const (
	issuer   = "https://iris.trackunit.com"
	audience = harness.App
)

func simOptions() trackunitsim.Options {
	return trackunitsim.Options{Issuer: issuer, Audience: audience}
}
