package drills

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// authOutage is the size of the auth server outage drill. Time is the
// broker's fake clock: a drill lives through an hour of token life at once.
type authOutage struct {
	outage time.Duration // how long the auth server is down
	lead   time.Duration // the outage starts this long before the old token expires
	margin time.Duration // TOKEN_REFRESH_MARGIN
	step   time.Duration // the fake time between two rounds of calls
}

// minServeLeft mirrors the broker's rule that a cached token is served only
// with at least 5 s left, so it does not expire on the wire.
const minServeLeft = 5 * time.Second

// drillAuthOutage takes Trackunit's auth server down (connections refused,
// via a proxy) from `lead` before a cached token expires until `outage`
// later, and calls GetToken every `step` of fake time for three installs:
//   - old: its token expires during the outage: served until 5 s before
//     expiry, then unavailable, then a new token once the server is back;
//   - fresh: minted just before the outage, served throughout;
//   - cold: never fetched: unavailable during the outage, then a token.
//
// Recovery must come within 1 s (fake) of the server's return.
func drillAuthOutage(t *testing.T, p authOutage) {
	ctx := testkit.ContextWithin(t, 3*time.Minute)
	clock := testkit.NewClock(time.Now().Truncate(time.Second))
	sim := newSim(t, trackunitsim.Options{Now: clock.Now})
	authProxy := testdb.NewProxy(t, sim.Addr) // any TCP: here the auth server
	dbURL := testdb.NewDatabase(t)
	svc := startService(t, ctx, harness.ServiceConfig{
		DatabaseURL: dbURL, Keys: newKeys(t), JWKSURL: sim.JWKSURL(), AuthURL: "http://" + authProxy.Addr(),
		Now: clock.Now, RefreshMargin: p.margin,
		TokenSleep: func(context.Context, time.Duration) error { return nil }, // retries at once
	})
	client := loadgen.HTTP1Client(4)
	accounts := map[string]string{}
	for _, name := range []string{"old", "fresh", "cold"} {
		cb, err := harness.NewCallback(sim.Sim, harness.App, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := cb.PostInstalled(ctx, client, svc.PublicURL); err != nil {
			t.Fatal(err)
		}
		accounts[name] = cb.AccountID
	}
	get := func(name string) harness.TokenAnswer {
		a, err := harness.GetTokenJSON(ctx, client, svc.InternalURL, harness.TokenRequestBody(harness.App, accounts[name]))
		if err != nil {
			t.Fatalf("GetToken %s: %v", name, err)
		}
		return a
	}

	old := get("old")
	oldExpiry := parseTime(t, old.ExpiresAt)
	outageStart := oldExpiry.Add(-p.lead)
	clock.Advance(outageStart.Sub(clock.Now()) - time.Second)
	fresh := get("fresh")
	clock.Advance(time.Second)
	authProxy.Block()
	outageEnd := outageStart.Add(p.outage)

	var served, unavailable int
	for now := clock.Now(); now.Before(outageEnd); now = clock.Now() {
		a := get("old")
		switch {
		case now.Before(oldExpiry.Add(-minServeLeft)):
			if a.HTTPStatus != http.StatusOK || a.AccessToken != old.AccessToken {
				t.Fatalf("at expiry%v the old token is not served: %d %s", now.Sub(oldExpiry), a.HTTPStatus, a.Code)
			}
			served++
		default:
			if a.HTTPStatus != http.StatusServiceUnavailable || a.Code != "unavailable" {
				t.Fatalf("at expiry+%v (auth down, token expired): %d %s, want 503 unavailable", now.Sub(oldExpiry), a.HTTPStatus, a.Code)
			}
			unavailable++
		}
		if a := get("fresh"); a.AccessToken != fresh.AccessToken {
			t.Fatalf("at outage+%v the fresh token is not served: %d %s", now.Sub(outageStart), a.HTTPStatus, a.Code)
		}
		if a := get("cold"); a.Code != "unavailable" {
			t.Fatalf("at outage+%v a cold install got %d %s, want unavailable", now.Sub(outageStart), a.HTTPStatus, a.Code)
		}
		clock.Advance(min(p.step, outageEnd.Sub(now)))
	}
	if served == 0 || unavailable == 0 {
		t.Fatalf("the outage did not span the old token's expiry: %d served, %d unavailable", served, unavailable)
	}

	// The server returns; within 1 s (fake) both installs get tokens.
	authProxy.Unblock()
	back := time.Now()
	deadline := outageEnd.Add(time.Second)
	var recovered time.Duration
	for {
		o, c := get("old"), get("cold")
		if o.HTTPStatus == http.StatusOK && c.HTTPStatus == http.StatusOK {
			if o.AccessToken == old.AccessToken {
				t.Fatal("the expired token was served again")
			}
			recovered = clock.Now().Sub(outageEnd)
			break
		}
		if !clock.Now().Before(deadline) {
			t.Fatalf("no recovery within 1 s of the auth server's return: old %d %s, cold %d %s", o.HTTPStatus, o.Code, c.HTTPStatus, c.Code)
		}
		clock.Advance(100 * time.Millisecond)
	}
	t.Logf("auth outage: %v down from %v before the old token's expiry (refresh margin %v), calls every %v",
		p.outage, p.lead, p.margin, p.step)
	t.Logf("  old token served %d rounds, then unavailable %d rounds; fresh token served throughout; recovery %v (fake) / %v (real) after the return",
		served, unavailable, recovered, time.Since(back).Round(time.Millisecond))
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("expiresAt %q: %v", s, err)
	}
	return v
}
