package harness

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestScrapeMetric(t *testing.T) {
	const page = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_goroutines_extra 7
irisx_http_requests_total{listener="public",route="/appinstall",code="200"} 12
process_open_fds 9
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(page)) }))
	defer srv.Close()
	tests := []struct {
		name    string
		want    float64
		wantErr bool
	}{
		{"go_goroutines", 42, false},
		{"process_open_fds", 9, false},
		{"irisx_http_requests_total", 0, true}, // labelled: not an unlabelled sample
		{`irisx_http_requests_total{listener="public",route="/appinstall",code="200"}`, 12, false}, // one labelled sample
		{"go_threads", 0, true},
	}
	for _, tc := range tests {
		got, err := ScrapeMetric(context.Background(), srv.Client(), srv.URL, tc.name)
		if tc.wantErr && !errors.Is(err, ErrNoSample) {
			t.Errorf("ScrapeMetric(%s): error %v, want ErrNoSample", tc.name, err)
		}
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ScrapeMetric(%s) = %v, %v; want %v, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestProcStats(t *testing.T) {
	pid := os.Getpid()
	if rss, err := RSS(pid); err != nil || rss <= 0 {
		t.Errorf("RSS(self) = %d, %v", rss, err)
	}
	if n, err := OpenFiles(pid); err != nil || n < 3 {
		t.Errorf("OpenFiles(self) = %d, %v; want at least stdin, stdout, stderr", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := SamplePeakRSS(ctx, pid, time.Millisecond)
	cancel()
	if peak, err := p.Wait(); err != nil || peak <= 0 {
		t.Errorf("SamplePeakRSS(self) = %d, %v", peak, err)
	}
	m := DescribeMachine()
	if m.CPUs < 1 || m.GoVersion == "" || m.MemTotalGiB() <= 0 {
		t.Errorf("DescribeMachine() = %+v", m)
	}
	if _, _, _, err := LoadAverage(); err != nil {
		t.Error(err)
	}
}

// StampedeCalls posts the given body to the given route of every broker
// round-robin, with the internal bearer, and tallies tokens and failures.
func TestStampedeCalls(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{} // host -> calls
	handler := func(token string, status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if r.URL.Path != GetAPIUserTokenPath || r.Header.Get("Authorization") != "Bearer "+InternalToken ||
				string(body) != `{"name":"ops"}` {
				http.Error(w, `{"code":"invalid_argument"}`, http.StatusBadRequest)
				return
			}
			mu.Lock()
			seen[r.Host]++
			mu.Unlock()
			w.WriteHeader(status)
			if status != http.StatusOK {
				_, _ = w.Write([]byte(`{"code":"unavailable"}`))
				return
			}
			_, _ = w.Write([]byte(`{"accessToken":"` + token + `","expiresAt":"2026-01-01T00:00:00Z"}`))
		}
	}
	a := httptest.NewServer(handler("tok-a", http.StatusOK))
	defer a.Close()
	b := httptest.NewServer(handler("tok-b", http.StatusOK))
	defer b.Close()
	c := httptest.NewServer(handler("", http.StatusServiceUnavailable))
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := StampedeCalls(ctx, []string{a.URL, b.URL, c.URL}, GetAPIUserTokenPath, APIUserTokenRequestBody("ops"), 9)
	if diff := cmp.Diff(StampedeResult{OK: 6, Failed: 3, FirstFailure: "answered 503 unavailable", Tokens: 2}, got); diff != "" {
		t.Errorf("StampedeCalls (-want +got):\n%s", diff)
	}
	want := map[string]int{strings.TrimPrefix(a.URL, "http://"): 3, strings.TrimPrefix(b.URL, "http://"): 3,
		strings.TrimPrefix(c.URL, "http://"): 3}
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("calls per broker (-want +got):\n%s", diff)
	}
}

// CPUTime counts this process's CPU: a busy loop of 200 ms moves it.
func TestCPUTime(t *testing.T) {
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for start := time.Now(); time.Since(start) < 200*time.Millisecond; {
		x++
	}
	after, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := after - before; d < 50*time.Millisecond || x == 0 {
		t.Errorf("CPU time moved by %v over a 200 ms busy loop", d)
	}
	if _, err := CPUTime(-1); err == nil {
		t.Error("CPUTime of pid -1: no error")
	}
}
