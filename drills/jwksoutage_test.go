package drills

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// jwksOutage is the size of the JWKS drill.
type jwksOutage struct {
	flood   int           // callbacks with random kids
	workers int           // concurrent flooders
	tick    time.Duration // fake time that passes per flood callback
}

// drillJWKSOutage takes the JWKS endpoint down, rotates Trackunit's key
// (the old one leaves the set) and floods the broker with callbacks under
// random kids. The broker must stay up, keep accepting the old key it
// holds, refuse the flood, fetch the JWKS no more often than the cooldown
// (and its retry backoff) allows, and accept callbacks signed with the new
// key once the endpoint is back.
func drillJWKSOutage(t *testing.T, p jwksOutage) {
	ctx := testkit.ContextWithin(t, 5*time.Minute)
	clock := testkit.NewClock(time.Now())
	sim := newSim(t, trackunitsim.Options{Now: clock.Now})
	cooldown := identity.DefaultUnknownKIDCooldown
	svc := startService(t, ctx, harness.ServiceConfig{
		DatabaseURL: testdb.NewDatabase(t), Keys: newKeys(t), JWKSURL: sim.JWKSURL(), AuthURL: sim.URL,
		Now: clock.Now, UnknownKIDCooldown: cooldown,
	})
	client := loadgen.HTTP1Client(p.workers)
	post := func(cb harness.Callback) int {
		status, _, err := cb.Post(ctx, client, svc.PublicURL)
		if err != nil {
			t.Fatalf("callback: %v (did the broker crash?)", err)
		}
		return status
	}
	signed := func() harness.Callback {
		cb, err := harness.NewCallback(sim.Sim, harness.App, false)
		if err != nil {
			t.Fatal(err)
		}
		return cb
	}

	oldKID := sim.SigningKID()
	beforeOutage, duringOutage := signed(), signed() // both under the old key
	if got := post(beforeOutage); got != http.StatusOK {
		t.Fatalf("a callback before the outage: %d", got)
	}

	// Down, and rotated behind the outage: the old key leaves the set.
	sim.InjectFault(trackunitsim.EndpointJWKS, trackunitsim.Fault{Status: http.StatusServiceUnavailable})
	if _, err := sim.Rotate("RS256"); err != nil {
		t.Fatal(err)
	}
	sim.RemoveKey(oldKID)
	if got := post(duringOutage); got != http.StatusOK {
		t.Errorf("a callback under the held key during the outage: %d, want 200", got)
	}

	fetchesBefore := sim.Calls(trackunitsim.EndpointJWKS)
	fakeStart, realStart := clock.Now(), time.Now()
	var next atomic.Int64
	statuses := sync.Map{}
	var wg sync.WaitGroup
	for range p.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(p.flood) {
				clock.Advance(p.tick)
				status, _, err := randomKIDCallback(clock.Now()).Post(ctx, client, svc.PublicURL)
				if err != nil {
					status = -1 // no answer
				}
				n, _ := statuses.LoadOrStore(status, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}()
	}
	wg.Wait()
	fakeSpan, realSpan := clock.Now().Sub(fakeStart), time.Since(realStart)
	fetches := sim.Calls(trackunitsim.EndpointJWKS) - fetchesBefore
	statuses.Range(func(k, v any) bool {
		if k.(int) != http.StatusUnauthorized {
			t.Errorf("%d flood callbacks answered %d, want 401", v.(*atomic.Int64).Load(), k)
		}
		return true
	})
	// On-demand refetches: one per cooldown of (fake) time. Failed fetches
	// are retried by the refresher with a backoff doubling from 1 s of real
	// time, at most log2(span)+1 times.
	bound := 1 + int(fakeSpan/cooldown) + int(math.Log2(realSpan.Seconds()+1)) + 1
	if fetches > bound {
		t.Errorf("%d JWKS fetches during the flood, more than the cooldown and backoff allow (%d)", fetches, bound)
	}

	// Back up: a callback under the new key is accepted once the cooldown
	// since the last on-demand fetch has passed.
	sim.ClearFaults()
	clock.Advance(cooldown + time.Second)
	if got := post(signed()); got != http.StatusOK {
		t.Errorf("a callback under the new key after the JWKS returned: %d, want 200", got)
	}
	if got := post(duringOutage); got != http.StatusUnauthorized {
		t.Errorf("a callback under the removed key after the refetch: %d, want 401", got)
	}
	resp, err := client.Get(svc.PublicURL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Logf("JWKS outage: %d random-kid callbacks from %d workers in %v (%v of fake time), all refused",
		p.flood, p.workers, realSpan.Round(time.Millisecond), fakeSpan)
	t.Logf("  %d JWKS fetches during the flood (bound %d: cooldown %v); new key accepted after recovery", fetches, bound, cooldown)
}

// randomKIDCallback is an attacker's callback: a well-formed JWT whose kid
// no JWKS holds and whose signature is noise (it is never checked: the key
// is not found). It costs the attacker nothing to make.
func randomKIDCallback(now time.Time) harness.Callback {
	kid := make([]byte, 12)
	sig := make([]byte, 256)
	_, _ = rand.Read(kid)
	_, _ = rand.Read(sig)
	account := "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": hex.EncodeToString(kid)})
	claims, _ := json.Marshal(map[string]any{"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"accountId": account, "irisAppId": harness.App})
	enc := base64.RawURLEncoding
	body, _ := json.Marshal(map[string]string{"type": "INSTALLED", "irisAppId": harness.App, "accountId": account,
		"clientId": "0oaforgedforgedforge", "clientSecret": "not-a-real-secret"})
	return harness.Callback{IrisAppID: harness.App, AccountID: account, Body: body,
		Identity: enc.EncodeToString(header) + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString(sig)}
}
