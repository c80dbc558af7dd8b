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
)

// TestQuickRun runs every phase scaled down to seconds against the real
// broker binary and a throwaway database, profiling every phase, and checks
// the report's shape and the figures that are about correctness rather
// than speed (on a shared, race-instrumented test machine speed means
// nothing).
func TestQuickRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	var progress bytes.Buffer
	r, err := Run(ctx, Options{
		DBName: "irisx_bench_test_" + hex.EncodeToString(suffix), Quick: true, Profile: ProfileAll,
		Command: "go test ./bench/", Progress: &progress,
	})
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}

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
	if diff := cmp.Diff([]string{"Identity", "Cached token", "Install ingest", "Stampede", "Scale"}, areas); diff != "" {
		t.Errorf("areas (-want +got):\n%s", diff)
	}
	for name, want := range map[string]string{
		"200 concurrent cold GetToken, 1 instance":                "1 upstream call(s)",
		"200 concurrent cold GetToken, 3 instances, one database": "", // 1 to 3
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
		"## Where the time goes", AnalysisMarker, "ListInstalls page"} {
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
