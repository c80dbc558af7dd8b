package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"
)

// TestProxyPhase runs the IRIS proxy phase alone, scaled down, and checks
// its figures are there and every proxied GET succeeded. With
// IRISX_BENCH_FULL=1 it runs at full scale and logs the table (for the
// closing note; never in CI).
func TestProxyPhase(t *testing.T) {
	full := os.Getenv("IRISX_BENCH_FULL") == "1"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	var progress bytes.Buffer
	r, err := Run(ctx, Options{
		DBName: "irisx_bench_proxy_" + hex.EncodeToString(suffix), Quick: !full, Phases: []string{"iris proxy"},
		Command: "go test -run TestProxyPhase ./bench/", Progress: &progress,
	})
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	var names []string
	for _, f := range r.Figures {
		if f.Area != "IRIS proxy" || f.Value == "" {
			t.Errorf("figure %+v", f)
		}
		names = append(names, f.Name)
	}
	if len(names) != 4 || !strings.Contains(names[1], "server CPU") {
		t.Errorf("figures %q", names)
	}
	var table bytes.Buffer
	r.WriteTable(&table)
	t.Logf("\n%s", table.String())
	for _, d := range r.Details {
		t.Logf("%s: %s", d.Phase, d.Line)
	}
}
