package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// identityTarget is the most Verify may cost relative to bare jwx.
const identityTarget = 1.3

// identityPhase benchmarks the verifier against bare jwx for a token signed
// by each key kind, in this process (testing.Benchmark).
func (r *runner) identityPhase(ctx context.Context) error {
	kids := map[string]string{}
	for _, kind := range r.sc.identityKinds {
		if kind == "RS256" {
			kids[kind] = r.sim.SigningKID() // the simulator starts with an RS256 key
			continue
		}
		kid, err := r.sim.AddKey(kind)
		if err != nil {
			return err
		}
		kids[kind] = kid
	}
	v, err := identity.New(identity.Config{
		JWKSURL: r.sim.JWKSURL(), Issuer: issuer, Audience: audience,
		Leeway: 60 * time.Second, MaxAge: identity.DefaultMaxAge,
	})
	if err != nil {
		return err
	}
	vctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { v.Run(vctx); close(done) }()
	defer func() { cancel(); <-done }()
	for !v.Ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}

	for _, kind := range r.sc.identityKinds {
		ours, bare, err := benchVerify(ctx, r.sim.Sim, v, kind, kids[kind])
		if err != nil {
			return err
		}
		ratio := float64(ours.NsPerOp()) / float64(bare.NsPerOp())
		r.report.add(Figure{
			Area: "Identity", Name: "Verify vs bare jwx, " + kind,
			Value:    fmt.Sprintf("%.1f µs/op, %d allocs", float64(ours.NsPerOp())/1e3, ours.AllocsPerOp()),
			Baseline: fmt.Sprintf("%.1f µs/op, %d allocs", float64(bare.NsPerOp())/1e3, bare.AllocsPerOp()),
			Ratio:    fmt.Sprintf("%.2f×", ratio), Target: fmt.Sprintf("≤ %.1f×", identityTarget),
			Pass: pass(ratio <= identityTarget),
		})
		r.report.detail("Identity", "%s Verify: %s %s", kind, ours, ours.MemString())
		r.report.detail("Identity", "%s bare jwt.Parse: %s %s", kind, bare, bare.MemString())
	}
	return nil
}

// benchVerify benchmarks Verify and bare jwt.Parse on one token. Both are
// checked to accept it first, so neither loop measures a failure path.
func benchVerify(ctx context.Context, sim *trackunitsim.Sim, v *identity.Verifier, kind, kid string) (ours, bare testing.BenchmarkResult, err error) {
	tok, err := sim.SignIdentityWith(kid, trackunitsim.Claims{"accountId": uuid.NewString(), "irisAppId": harness.App})
	if err != nil {
		return ours, bare, err
	}
	pub, err := sim.PublicKey(kid)
	if err != nil {
		return ours, bare, err
	}
	alg := jwa.SignatureAlgorithm(kind)
	raw := []byte(tok)
	if _, err := v.Verify(ctx, tok); err != nil {
		return ours, bare, fmt.Errorf("verifier refuses the %s token: %w", kind, err)
	}
	if _, err := jwt.Parse(raw, jwt.WithKey(alg, pub)); err != nil {
		return ours, bare, fmt.Errorf("jwx refuses the %s token: %w", kind, err)
	}
	// b.Fatal outside a test would only end the benchmark quietly; failures
	// are counted and reported instead.
	var failed atomic.Int64
	ours = testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, tok); err != nil {
				failed.Add(1)
			}
		}
	})
	bare = testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jwt.Parse(raw, jwt.WithKey(alg, pub)); err != nil {
				failed.Add(1)
			}
		}
	})
	if n := failed.Load(); n > 0 || ours.N == 0 || bare.N == 0 {
		return ours, bare, fmt.Errorf("%s: %d verifications failed during the benchmark", kind, n)
	}
	return ours, bare, nil
}
