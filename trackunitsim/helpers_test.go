package trackunitsim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// t0 is the fake clock's start; far from the real time so that a forgotten
// real clock shows up as a failure.
var t0 = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)

func newClock() *testkit.Clock { return testkit.NewClock(t0) }

// sharedKeys is a key file made once in TestMain, so that tests that do not
// care about keys skip RSA generation, which is slow under -race.
var sharedKeys string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "trackunitsim-test-")
	if err != nil {
		panic(err)
	}
	sharedKeys = filepath.Join(dir, "keys.json")
	s, err := New(Options{})
	if err == nil {
		err = s.SaveKeys(sharedKeys)
	}
	if err != nil {
		panic(err)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// newTestSim starts a Sim (with the shared keys) behind an httptest server.
// opts.Now defaults to a fake clock at t0.
func newTestSim(t *testing.T, opts Options) (*Sim, *httptest.Server) {
	t.Helper()
	if opts.Now == nil {
		opts.Now = newClock().Now
	}
	s, err := LoadSim(sharedKeys, opts)
	if err != nil {
		t.Fatalf("LoadSim: %v", err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.Close()
		srv.Close()
	})
	return s, srv
}

// postForm POSTs a form, optionally with Basic auth, and returns status,
// headers and the decoded JSON body.
func postForm(t *testing.T, srvURL, path string, form url.Values, basic []string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(testkit.Context(t), http.MethodPost, srvURL+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic != nil {
		req.SetBasicAuth(basic[0], basic[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		body = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, resp.Header, body
}

// fetchJWKS fetches and parses a served key set with jwx, as the broker does.
func fetchJWKS(t *testing.T, u string) jwk.Set {
	t.Helper()
	set, err := jwk.Fetch(testkit.Context(t), u)
	if err != nil {
		t.Fatalf("fetch %s: %v", u, err)
	}
	return set
}
