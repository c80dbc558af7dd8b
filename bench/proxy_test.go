package bench

import (
	"bytes"
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
	r := runForTest(t, 4*time.Minute, "irisx_bench_proxy_", Options{Quick: !full, Phases: []string{"iris proxy"},
		Command: "go test -run TestProxyPhase ./bench/"})
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
