package token

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// A replica killed between Trackunit's answer and the commit (the
// afterUpstream hook) leaves a lease nobody releases. The next caller, on
// another replica, recovers once the lease runs out: no lock-out, for the
// install kind and the API key kind (TestAPIUserCrashBeforeCommitRecovers
// covers API users).
func TestCrashBetweenAnswerAndCommitRecovers(t *testing.T) {
	t.Parallel()
	e := newUserEnv(t, trackunitsim.Options{})
	ctx := context.Background()
	account := uuid.NewString()
	id, secret := trackunitsim.NewClientCredentials()
	e.sim.AddClient(id, secret, nil)
	if _, err := e.admin.ApplyInstallEvent(ctx, store.InstallEvent{Type: store.TypeInstalled, IrisAppID: "@acme/app",
		AccountID: account, ClientID: crypto.Secret(id), ClientSecret: secret}); err != nil {
		t.Fatal(err)
	}
	keyID, keySecret := trackunitsim.NewClientCredentials()
	e.sim.AddAPIKey(keyID, keySecret, []string{"asset.view"})
	if _, err := e.admin.CreateAPIKey(ctx, store.NewAPIKey{Name: "k", ClientID: crypto.Secret(keyID), ClientSecret: keySecret,
		Scopes: []string{"asset.view"}}); err != nil {
		t.Fatal(err)
	}
	cfg := func() Config {
		return Config{AuthURL: e.simURL, DefaultScopes: []string{"asset.view"}, RefreshMargin: 5 * time.Minute,
			HTTPClient: &http.Client{Timeout: 5 * time.Second}, Now: e.clock.Now, Sleep: e.sleeps.Sleep,
			FetchTimeout: 20 * time.Second}
	}
	crash := func() error { return errors.New("killed before commit") }

	for _, kind := range []struct {
		name     string
		endpoint string
		get      func(dying bool) (Token, error)
	}{
		{"install", trackunitsim.EndpointAppToken, func(dying bool) (Token, error) {
			_, st := e.newStore()
			b, err := New(cfg(), st)
			if err != nil {
				t.Fatal(err)
			}
			if dying {
				b.afterUpstream = crash
			}
			return b.Token(ctx, Request{IrisAppID: "@acme/app", AccountID: account})
		}},
		{"API key", trackunitsim.EndpointTokenV2, func(dying bool) (Token, error) {
			_, st := e.newStore()
			b, err := NewAPIKeys(cfg(), st)
			if err != nil {
				t.Fatal(err)
			}
			if dying {
				b.b.afterUpstream = crash
			}
			return b.Token(ctx, "k", nil, 0)
		}},
	} {
		if _, err := kind.get(true); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s: through a crash before commit: %v, want unavailable", kind.name, err)
		}
		// The dead replica's lease (FetchTimeout plus 1 s) runs out.
		e.clock.Advance(30 * time.Second)
		tok, err := kind.get(false)
		if err != nil || !e.sim.ValidAccessToken(tok.AccessToken.Reveal()) {
			t.Fatalf("%s: the next caller after the crash: %v", kind.name, err)
		}
		if got := e.sim.Calls(kind.endpoint); got != 2 {
			t.Errorf("%s: %d upstream calls, want 2 (the lost one and the recovery)", kind.name, got)
		}
		// And the recovered token is now the fleet's: a third replica mints nothing.
		again, err := kind.get(false)
		if err != nil || again.AccessToken != tok.AccessToken || e.sim.Calls(kind.endpoint) != 2 {
			t.Errorf("%s: a third replica did not get the committed token (err %v)", kind.name, err)
		}
	}
}

// Detached fetches past the cap fail at once as unavailable instead of
// piling up connections to a hanging Trackunit.
func TestFetchCapFailsFast(t *testing.T) {
	t.Parallel()
	e := newUserEnv(t, trackunitsim.Options{})
	ctx := context.Background()
	account := uuid.NewString()
	id, secret := trackunitsim.NewClientCredentials()
	e.sim.AddClient(id, secret, trackunitsim.AppScopes())
	if _, err := e.admin.ApplyInstallEvent(ctx, store.InstallEvent{Type: store.TypeInstalled, IrisAppID: "@acme/app",
		AccountID: account, ClientID: crypto.Secret(id), ClientSecret: secret}); err != nil {
		t.Fatal(err)
	}
	e.sim.InjectFault(trackunitsim.EndpointAppToken, trackunitsim.Fault{Hang: true})
	_, st := e.newStore()
	b, err := New(Config{AuthURL: e.simURL, RefreshMargin: time.Minute, HTTPClient: &http.Client{Timeout: 3 * time.Second},
		Now: e.clock.Now, Sleep: e.sleeps.Sleep, FetchTimeout: 3 * time.Second, MaxFetches: 4, MaxAttempts: 1}, st)
	if err != nil {
		t.Fatal(err)
	}
	scopes := trackunitsim.AppScopes()
	for i := range 4 { // fill the cap; the callers give up, the fetches go on
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, _ = b.Token(cctx, Request{IrisAppID: "@acme/app", AccountID: account, Scopes: scopes[i : i+1]})
		cancel()
	}
	start := time.Now()
	_, err = b.Token(ctx, Request{IrisAppID: "@acme/app", AccountID: account, Scopes: scopes[10:11]})
	if !errors.Is(err, ErrUnavailable) || time.Since(start) > 500*time.Millisecond {
		t.Errorf("a fetch past the cap: %v after %v, want unavailable at once", err, time.Since(start))
	}
	if got := e.sim.Calls(trackunitsim.EndpointAppToken); got > 4 {
		t.Errorf("%d upstream calls in flight, want at most the cap of 4", got)
	}
}
