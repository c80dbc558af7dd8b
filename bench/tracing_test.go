package bench

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestTracingPhase runs the tracing phase alone, scaled down, and checks
// its figure is there and the traced broker exported spans. With
// IRISX_BENCH_FULL=1 it runs at full scale and logs the table.
func TestTracingPhase(t *testing.T) {
	full := os.Getenv("IRISX_BENCH_FULL") == "1"
	r := runForTest(t, 4*time.Minute, "irisx_bench_tracing_", Options{Quick: !full, Phases: []string{"tracing"},
		Command: "go test -run TestTracingPhase ./bench/"})
	if len(r.Figures) != 2 {
		t.Fatalf("figures %+v, want the throughput and the CPU rows", r.Figures)
	}
	for _, f := range r.Figures {
		if f.Area != "Tracing" || f.Value == "" || f.Ratio == "" {
			t.Fatalf("figure %+v", f)
		}
	}
	exports := -1
	for _, d := range r.Details {
		t.Logf("%s: %s", d.Phase, d.Line)
		if strings.HasPrefix(d.Line, "the OTLP sink received") {
			_, _ = fmt.Sscanf(d.Line, "the OTLP sink received %d", &exports)
		}
	}
	if exports <= 0 {
		t.Errorf("the traced broker exported %d times, want at least once", exports)
	}
	var table bytes.Buffer
	r.WriteTable(&table)
	t.Logf("\n%s", table.String())
}
