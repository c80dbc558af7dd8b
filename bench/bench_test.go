package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/bench/harness"
)

// runForTest runs the bench with opts on a database of its own, named
// prefix plus a random suffix, within timeout, and fails the test with the
// progress lines if the run fails.
func runForTest(t *testing.T, timeout time.Duration, prefix string, opts Options) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	var progress bytes.Buffer
	opts.DBName, opts.Progress = prefix+hex.EncodeToString(suffix), &progress
	r, err := Run(ctx, opts)
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	return r
}

// TestQuickRun runs every phase scaled down to seconds against the real
// broker binary and a throwaway database, profiling every phase, and checks
// the report's shape and the figures that are about correctness rather
// than speed (on a shared, race-instrumented test machine speed means
// nothing).
func TestQuickRun(t *testing.T) {
	// Minutes: the broker also runs under callgrind, fifty times slower.
	r := runForTest(t, 8*time.Minute, "irisx_bench_test_", Options{Quick: true, Profile: ProfileAll, Command: "go test ./bench/"})

	var areas []string
	byName := map[string]Figure{}
	for _, f := range r.Figures {
		if len(areas) == 0 || areas[len(areas)-1] != f.Area {
			areas = append(areas, f.Area)
		}
		byName[f.Name] = f
		if f.Value == "" {
			t.Errorf("figure %s / %s has no value", f.Area, f.Name)
		}
	}
	if diff := cmp.Diff([]string{"Identity", "Cached token", "Install ingest", "Stampede", "Scale", "IRIS proxy", "Tracing", "Events"}, areas); diff != "" {
		t.Errorf("areas (-want +got):\n%s", diff)
	}
	for name, want := range map[string]string{
		"200 concurrent cold GetToken, 1 instance":                "1 upstream call(s)",
		"200 concurrent cold GetToken, 3 instances, one database": "", // 1 to 3
		// Exactly one refresh across the three instances, no password
		// grant, and no spent refresh token presented again.
		"200 concurrent GetApiUserToken needing a refresh, 3 instances, one database": "1 refresh_token + 0 password grant(s) at /token, 0 spent refresh token(s) reused",
		"200 concurrent GetApiUserToken: answers":                                     "200 OK, 0 failed, 1 distinct token(s)",
		// The token core shares the minted token fleet-wide.
		"upstream mints, 200 cold callers over 3 instances":                            "1 mint(s) for 1 install",
		"upstream mints, 200 cold callers over 3 instances, API user (/token refresh)": "1 refresh(es) for 1 API user",
		"upstream mints, 200 cold callers over 3 instances, API key (/token/v2)":       "1 mint(s) for 1 API key",
	} {
		f, ok := byName[name]
		if !ok {
			t.Errorf("no figure %q", name)
			continue
		}
		if f.Pass == nil || !*f.Pass || (want != "" && f.Value != want) {
			t.Errorf("%s: %s (%s)", name, f.Value, f.Verdict())
		}
	}
	// The CPU-per-request rows are there and measured something.
	for _, name := range []string{
		"server CPU per cached GetToken, Connect-JSON vs bare Echo",
		"server CPU per cached GetToken, gRPC vs Connect-JSON",
		"proxied GET, added server CPU vs httputil.ReverseProxy",
	} {
		f, ok := byName[name]
		if !ok {
			t.Errorf("no figure %q", name)
			continue
		}
		if strings.HasPrefix(f.Value, "0.0 µs") || strings.HasPrefix(f.Baseline, "0.0 µs") || f.Ratio == "" || f.Ratio == "n/a" {
			t.Errorf("%s: value %q, baseline %q, ratio %q: no CPU measured", name, f.Value, f.Baseline, f.Ratio)
		}
	}
	// The scale rows: a cached token for every one of the installs, with
	// Go's defaults and with the chart's GOMEMLIMIT (the phase fails unless
	// each second round is all cache hits), and the deep page checked
	// against SQL.
	for _, name := range []string{"2000 installs each with a cached token in memory: RSS (Go defaults: GOGC=100, no GOMEMLIMIT)",
		"2000 installs each with a cached token in memory: RSS (GOMEMLIMIT=230MiB as the Helm chart sets it, GOGC=100)",
		"ListInstalls deep page at 20 k installs vs page 1: page 200 (pageSize 50), p50 / p99"} {
		if f, ok := byName[name]; !ok || f.Value == "" {
			t.Errorf("no figure %q", name)
		}
	}
	if len(r.Profiles) != 2 {
		t.Errorf("%d profiles with ProfileAll, want the token and ingest phases'", len(r.Profiles))
	}
	for _, p := range r.Profiles {
		if !strings.Contains(p.Top, "flat%") {
			t.Errorf("profile %q has no pprof table:\n%s", p.Title, p.Top)
		}
	}

	var md bytes.Buffer
	r.WriteMarkdown(&md, "")
	for _, want := range []string{"# Benchmarks", "| machine |", "## Results", "## Method", "## Raw measurements",
		"## Where the time goes", AnalysisMarker, "ListInstalls deep page"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// A regenerated report keeps the hand-written analysis.
	old := append(md.Bytes(), []byte("\nThe gap is the request log.\n")...)
	var again bytes.Buffer
	r.WriteMarkdown(&again, KeptAnalysis(old))
	if !strings.HasSuffix(again.String(), "The gap is the request log.\n") {
		t.Errorf("the analysis was not kept:\n%s", again.String()[max(0, again.Len()-300):])
	}
}

// The API-user stampede's verdicts: every part of each target counts.
func TestAPIUserStampedeFigures(t *testing.T) {
	ok := harness.StampedeResult{OK: 1000, Tokens: 1}
	tests := []struct {
		name                   string
		s                      apiUserStampede
		wantUpstream, wantAnsw string
	}{
		{"all met", apiUserStampede{Refresh: 1, Result: ok}, "met", "met"},
		{"two refreshes", apiUserStampede{Refresh: 2, Result: ok}, "MISSED", "met"},
		{"no refresh", apiUserStampede{Result: ok}, "MISSED", "met"},
		{"password grant", apiUserStampede{Refresh: 1, Password: 1, Result: ok}, "MISSED", "met"},
		{"reuse", apiUserStampede{Refresh: 1, Reuse: 1, Result: ok}, "MISSED", "met"},
		{"a failure", apiUserStampede{Refresh: 1, Result: harness.StampedeResult{OK: 999, Failed: 1, Tokens: 1}}, "met", "MISSED"},
		{"two tokens", apiUserStampede{Refresh: 1, Result: harness.StampedeResult{OK: 1000, Tokens: 2}}, "met", "MISSED"},
	}
	for _, tc := range tests {
		up, answ := tc.s.figures(1000)
		if diff := cmp.Diff([]string{tc.wantUpstream, tc.wantAnsw}, []string{up.Verdict(), answ.Verdict()}); diff != "" {
			t.Errorf("%s: verdicts (-want +got):\n%s", tc.name, diff)
		}
	}
	up, answ := apiUserStampede{Refresh: 1, Result: ok}.figures(1000)
	if diff := cmp.Diff([]string{
		"1 refresh_token + 0 password grant(s) at /token, 0 spent refresh token(s) reused",
		"1000 OK, 0 failed, 1 distinct token(s)",
	}, []string{up.Value, answ.Value}); diff != "" {
		t.Errorf("values (-want +got):\n%s", diff)
	}
}
