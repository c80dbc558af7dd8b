package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// The simulator's default address, where send, fault and the other control
// commands find it unless told otherwise.
const (
	defaultSimAddr = "127.0.0.1:8090"
	defaultSimURL  = "http://" + defaultSimAddr
)

// serve runs the simulator until ctx ends.
func serve(ctx context.Context, args []string, e env) error {
	set := e.flags("serve")
	addr := set.String("addr", defaultSimAddr, "listen address (port 0 picks a free port)")
	keys := set.String("keys", "", "key file: loaded if it exists, else created with a fresh key (mode 0600)")
	issuer := set.String("issuer", "", "iss of signed identity JWTs")
	audience := set.String("audience", "", "aud of signed identity JWTs")
	grace := set.Duration("refresh-grace", 0, "how long a rotated refresh token still works")
	ttl := set.Duration("token-ttl", trackunitsim.DefaultTokenTTL, "expires_in of issued access tokens")
	skipped := set.String("skipped-keys", "", "comma-separated keys a verifier must skip to publish too: "+strings.Join(trackunitsim.SkippedKeyKinds(), ","))
	webhookSecret := set.String("webhook-secret-file", "", "serve a webhook receiver at "+trackunitsim.WebhookPath+
		" printing and verifying the broker's event webhooks under this whsec_ secret (created if missing)")
	if err := parse(set, args); err != nil {
		return err
	}
	opts := trackunitsim.Options{Issuer: *issuer, Audience: *audience, RefreshGrace: *grace, TokenTTL: *ttl}
	sim, err := openSim(*keys, opts)
	if err != nil {
		return err
	}
	defer sim.Close()
	for _, kind := range strings.FieldsFunc(*skipped, func(r rune) bool { return r == ',' }) {
		if _, err := sim.AddSkippedKey(strings.TrimSpace(kind)); err != nil {
			return err
		}
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	handler, err := withWebhookReceiver(sim.Handler(), *webhookSecret, e.stdout)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           logRequests(log, handler),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Latency faults may hold an answer for minutes on purpose.
		WriteTimeout: 10 * time.Minute,
		IdleTimeout:  2 * time.Minute,
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(e.stdout, "trackunit-sim listening on %s\n", base)
	fmt.Fprintf(e.stdout, "  TRACKUNIT_JWKS_URL=%s/api/marketplace/jwks\n  TRACKUNIT_AUTH_URL=%s\n", base, base)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Release hanging fault handlers first, or Shutdown would wait on them.
	sim.Close()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// openSim loads the key file, or creates it with fresh keys when missing; an
// empty path means throwaway keys.
func openSim(path string, opts trackunitsim.Options) (*trackunitsim.Sim, error) {
	if path == "" {
		return trackunitsim.New(opts)
	}
	if _, err := os.Stat(path); err == nil {
		return trackunitsim.LoadSim(path, opts)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("key file: %w", err)
	}
	sim, err := trackunitsim.New(opts)
	if err != nil {
		return nil, err
	}
	if err := sim.SaveKeys(path); err != nil {
		return nil, err
	}
	return sim, nil
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

// WriteHeader records the status and passes it on.
func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// logRequests logs method, path and status of each request; never a body
// or header, which carry credentials.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		defer func() {
			status := any(rec.status)
			p := recover()
			if p != nil {
				status = "dropped" // a Hang or interrupted Latency fault
			}
			log.Info("request", "method", r.Method, "path", r.URL.Path, "status", status,
				"duration_ms", time.Since(start).Milliseconds())
			if p != nil {
				panic(p)
			}
		}()
		next.ServeHTTP(rec, r)
	})
}
