package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// serve buffers its log lines (internal/logwriter) but loses none: every
// request answered before the stop has its one line once serve returns.
func TestServeLogsEveryRequestByTheTimeItStops(t *testing.T) {
	sim, err := trackunitsim.New(trackunitsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, internal, stderr, stop := startServeLogged(t, sim, nil)
	const n = 50
	for i := range n {
		req, _ := http.NewRequest(http.MethodGet, internal+"/healthz", nil)
		req.Header.Set("X-Request-ID", fmt.Sprintf("log-test-%03d", i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	stop()
	// Read at once: the last lines were still held when serve returned.
	out := stderr.String()
	for i := range n {
		id := fmt.Sprintf(`"request_id":"log-test-%03d"`, i)
		if c := strings.Count(out, id); c != 1 {
			t.Errorf("request %d logged %d times, want once", i, c)
		}
	}
	if !strings.HasSuffix(strings.TrimSpace(out), `"msg":"stopped"}`) {
		t.Errorf("serve's last line is not its \"stopped\" line: ...%s", out[max(0, len(out)-300):])
	}
}
