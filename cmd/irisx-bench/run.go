package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/irisx-broker/irisx-broker/bench"
)

const usage = `usage: irisx-bench [flags]

Builds the broker, runs it against a fresh database (created and dropped on
the Postgres server of -db) and the Trackunit simulator, prints the results
table and writes the report. Needs the go command and a Postgres user that may
create databases. Takes about fifteen minutes; -quick takes seconds.

flags:
`

// run is the whole command, with its outputs injected for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("irisx-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	out := fs.String("out", "docs/BENCHMARKS.md", "where to write the report (\"\" for nowhere)")
	quick := fs.Bool("quick", false, "scale every phase down to seconds (smoke run)")
	db := fs.String("db", "", "Postgres server URL (default $TEST_DATABASE_URL, else the local server)")
	dbName := fs.String("dbname", "irisx_bench", "the throwaway database to create and drop")
	profile := fs.String("profile", "missed", "profile the request path of phases: missed (those missing a target), all, off")
	phases := fs.String("phases", "", "comma-separated phases to run (default all): identity, cached token, install ingest, stampede, scale, iris proxy, tracing, events")
	listInstalls := fs.Int("list-installs", 0, "installs to bulk-load for the scale phase's ListInstalls and start-time figures (default 10000000, -quick 20000)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *listInstalls < 0 {
		fmt.Fprintf(stderr, "irisx-bench: -list-installs must not be negative\n")
		return errors.New("bad flag")
	}
	modes := map[string]bench.ProfileMode{"missed": bench.ProfileMissed, "all": bench.ProfileAll, "off": bench.ProfileOff}
	mode, ok := modes[*profile]
	if !ok {
		fmt.Fprintf(stderr, "irisx-bench: -profile must be missed, all or off\n")
		return errors.New("bad flag")
	}

	report, err := bench.Run(ctx, bench.Options{
		ServerURL: *db, DBName: *dbName, Quick: *quick, Profile: mode, Progress: stderr, Phases: splitPhases(*phases),
		ListInstalls: *listInstalls,
		Command:      strings.TrimSpace("irisx-bench " + strings.Join(args[1:], " ")),
	})
	if report != nil && len(report.Figures) > 0 {
		report.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "irisx-bench: %v\n", err)
		return err
	}
	if *out != "" {
		old, err := os.ReadFile(*out)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		var md bytes.Buffer
		report.WriteMarkdown(&md, bench.KeptAnalysis(old))
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(*out, md.Bytes(), 0o644); err != nil {
			fmt.Fprintf(stderr, "irisx-bench: %v\n", err)
			return err
		}
		fmt.Fprintf(stdout, "\nwrote %s\n", *out)
	}
	for _, f := range report.Missed() {
		fmt.Fprintf(stdout, "target missed: %s / %s: %s (target %s)\n", f.Area, f.Name, f.Value, f.Target)
	}
	return nil
}

// splitPhases parses -phases; empty means every phase.
func splitPhases(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
