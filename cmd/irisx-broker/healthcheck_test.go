package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

func runHealth(t *testing.T, e map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, s testkit.Buffer
	err = run(t.Context(), append([]string{"irisx-broker", "healthcheck"}, args...), mapEnv(e), strings.NewReader(""), &o, &s)
	return o.String(), s.String(), err
}

func TestHealthcheckExitCodes(t *testing.T) {
	t.Parallel()
	var status atomic.Int32
	status.Store(http.StatusOK)
	var lastPath atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lastPath.Store(r.URL.Path)
		if r.URL.Path == "/slow" {
			time.Sleep(2 * time.Second)
		}
		w.WriteHeader(int(status.Load()))
	}))
	path := func() any { return lastPath.Load() }
	t.Cleanup(srv.Close)

	out, _, err := runHealth(t, nil, "--url", srv.URL+"/readyz")
	if err != nil || out != "ready\n" || path() != "/readyz" {
		t.Errorf("200: err %v, stdout %q, path %q; want success and \"ready\"", err, out, path())
	}
	status.Store(http.StatusServiceUnavailable)
	_, errOut, err := runHealth(t, nil, "--url", srv.URL+"/readyz")
	if err == nil || !strings.Contains(errOut, "503") {
		t.Errorf("503: err %v, stderr %q; want failure naming 503", err, errOut)
	}
	status.Store(http.StatusOK)
	start := time.Now()
	if _, _, err := runHealth(t, nil, "--url", srv.URL+"/slow", "--timeout", "200ms"); err == nil {
		t.Error("slow answer beyond --timeout: succeeded")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("the check took %v with --timeout 200ms", d)
	}
	// Nothing listening: the default URL is PUBLIC_ADDR's port on loopback.
	ln := freeAddr(t)
	if _, errOut, err := runHealth(t, map[string]string{"PUBLIC_ADDR": ln}); err == nil || !strings.Contains(errOut, "not ready") {
		t.Errorf("nothing listening: err %v, stderr %q", err, errOut)
	}
	// The default URL reaches a server on PUBLIC_ADDR's port.
	port := srv.Listener.Addr().String()[strings.LastIndex(srv.Listener.Addr().String(), ":"):]
	if _, _, err := runHealth(t, map[string]string{"PUBLIC_ADDR": port}); err != nil || path() != "/readyz" {
		t.Errorf("default URL from PUBLIC_ADDR=%s: %v (path %q)", port, err, path())
	}
	if _, _, err := runHealth(t, nil, "--url", "::bad"); err == nil {
		t.Error("a bad --url succeeded")
	}
}

func TestDefaultHealthURL(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		"":               "http://127.0.0.1:8080/readyz",
		":9000":          "http://127.0.0.1:9000/readyz",
		"0.0.0.0:8080":   "http://127.0.0.1:8080/readyz",
		"[::]:8080":      "http://127.0.0.1:8080/readyz",
		"127.0.0.1:8085": "http://127.0.0.1:8085/readyz",
		"10.1.2.3:8080":  "http://10.1.2.3:8080/readyz",
	} {
		got, err := defaultHealthURL(mapEnv(map[string]string{"PUBLIC_ADDR": addr}))
		if err != nil || got != want {
			t.Errorf("PUBLIC_ADDR=%q: %q, %v; want %q", addr, got, err, want)
		}
	}
	if _, err := defaultHealthURL(mapEnv(map[string]string{"PUBLIC_ADDR": "nonsense"})); err == nil {
		t.Error("PUBLIC_ADDR=nonsense: no error")
	}
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
