package identity

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/outbound"
)

// Retry delays after a failed fetch grow from firstRetry, doubling, and
// never exceed RefreshInterval: a failing endpoint is neither hammered nor
// left alone for a whole refresh period while no keys are loaded.
const (
	firstRetry    = time.Second
	maxRetryShift = 8
)

// Run loads the JWKS, then refreshes it every RefreshInterval and whenever
// Verify asks for an on-demand refetch. It is the only goroutine that
// fetches, so fetches never overlap. A failed fetch keeps the last good set
// and is retried with backoff. Run returns when ctx ends; calling it twice
// at once is a programming error and the second call returns at once.
func (v *Verifier) Run(ctx context.Context) {
	v.mu.Lock()
	if v.running {
		v.mu.Unlock()
		v.cfg.Logger.Error("identity: Verifier.Run is already running")
		return
	}
	v.running = true
	v.mu.Unlock()
	defer v.stop()

	failures := 0
	timer := v.after(v.fetchRound(ctx, &failures))
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer:
			timer = v.after(v.fetchRound(ctx, &failures))
		case <-v.refetch:
			// The request may already have been served by a periodic fetch
			// that started after it; then there is nothing left to do.
			if v.hasPending() {
				timer = v.after(v.fetchRound(ctx, &failures))
			}
		}
	}
}

// stop releases requests still waiting when Run ends; they then see the
// last good set (or none) instead of waiting out their contexts.
func (v *Verifier) stop() {
	v.mu.Lock()
	v.running = false
	p := v.pending
	v.pending = nil
	v.mu.Unlock()
	if p != nil {
		close(p.done)
	}
}

func (v *Verifier) hasPending() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.pending != nil
}

// requestRefetch returns the on-demand fetch the caller should wait for, or
// nil when none may be asked for: Run is not running, or the last one was
// asked within UnknownKIDCooldown. Joining a fetch already asked for is
// always allowed, which is what makes a burst of unknown kids cost one fetch.
func (v *Verifier) requestRefetch() *fetchWait {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.running {
		return nil
	}
	if v.pending != nil {
		return v.pending
	}
	now := v.cfg.Now()
	if !v.lastOnDemand.IsZero() && now.Sub(v.lastOnDemand) < v.cfg.UnknownKIDCooldown {
		return nil
	}
	v.lastOnDemand = now
	v.pending = &fetchWait{done: make(chan struct{})}
	select {
	case v.refetch <- struct{}{}:
	default: // Run has a wake-up queued already.
	}
	return v.pending
}

// fetchRound does one fetch, releases the requests that were waiting when it
// started (a request made during the fetch may need keys the fetch predates,
// so it waits for the next one), and returns the delay to the next fetch.
func (v *Verifier) fetchRound(ctx context.Context, failures *int) time.Duration {
	v.mu.Lock()
	p := v.pending
	v.mu.Unlock()

	n, err := v.fetch(ctx)

	if p != nil {
		v.mu.Lock()
		if v.pending == p {
			v.pending = nil
		}
		v.mu.Unlock()
		close(p.done)
	}

	if err != nil {
		*failures++
		v.cfg.Observer.JWKSFetched(FetchError, 0)
		v.cfg.Logger.Warn("identity: JWKS fetch failed, keeping the last good key set",
			"error", err, "have_keys", v.Ready(), "failures", *failures)
		delay := firstRetry << min(*failures-1, maxRetryShift)
		return min(delay, v.cfg.RefreshInterval)
	}
	*failures = 0
	v.cfg.Observer.JWKSFetched(FetchOK, n)
	return v.cfg.RefreshInterval
}

// fetch GETs the JWKS and, when it holds at least one usable key, makes it
// the current set. Any failure leaves the current set in place.
func (v *Verifier) fetch(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		return 0, fmt.Errorf("build JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	// Whatever client was configured, a redirect is never followed: a 3xx
	// is a failed fetch, and nothing is asked of the redirect's target.
	resp, err := outbound.NoRedirects(v.cfg.HTTPClient).Do(req)
	if err != nil {
		return 0, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("fetch JWKS: unexpected status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, v.cfg.MaxJWKSBytes+1))
	if err != nil {
		return 0, fmt.Errorf("read JWKS: %w", err)
	}
	if int64(len(body)) > v.cfg.MaxJWKSBytes {
		return 0, fmt.Errorf("JWKS is larger than %d bytes", v.cfg.MaxJWKSBytes)
	}
	set, skipped, err := parseKeySet(body, v.cfg.Now())
	if err != nil {
		return 0, err
	}
	v.keys.Store(set)
	v.cfg.Logger.Info("identity: JWKS loaded", "keys", set.count, "skipped", skipped)
	return set.count, nil
}
