package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/outbound"
)

// healthcheckTimeout bounds the whole check: a container HEALTHCHECK or an
// exec probe must not hang.
const healthcheckTimeout = 3 * time.Second

// runHealthcheck exits 0 when the readiness endpoint answers 200: the
// container image's HEALTHCHECK (distroless has no shell or curl). The
// default URL is PUBLIC_ADDR's /readyz on loopback.
func runHealthcheck(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "", "the URL to check (default: http://127.0.0.1:<PUBLIC_ADDR port>/readyz)")
	timeout := fs.Duration("timeout", healthcheckTimeout, "time-out of the whole check")
	if err := fs.Parse(args); err != nil {
		return errReported
	}
	if *target == "" {
		u, err := defaultHealthURL(lookup)
		if err != nil {
			return err
		}
		*target = u
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *target, nil)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	resp, err := outbound.New(outbound.Options{Timeout: *timeout}).Do(req)
	if err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready: %s answered %d", *target, resp.StatusCode)
	}
	fmt.Fprintln(stdout, "ready")
	return nil
}

// defaultHealthURL is PUBLIC_ADDR's /readyz: on 127.0.0.1 when the
// listener binds every address (":8080", "0.0.0.0:8080") or loopback, on
// the bound host otherwise.
func defaultHealthURL(lookup env) (string, error) {
	addr, ok := lookup("PUBLIC_ADDR")
	if !ok || addr == "" {
		addr = ":8080"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("PUBLIC_ADDR: %w", err)
	}
	if ip := net.ParseIP(host); host == "" || host == "localhost" || (ip != nil && (ip.IsUnspecified() || ip.IsLoopback())) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}
