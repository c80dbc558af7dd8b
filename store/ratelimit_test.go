package store_test

import (
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

func TestRateLimitHoldOnlyGrows(t *testing.T) {
	e := newEnv(t)
	s := e.store
	got, err := s.RateLimitHold(testkit.Context(t), app, account)
	if err != nil || !got.IsZero() {
		t.Fatalf("no hold yet: got %v, %v", got, err)
	}
	long := t0.Add(90 * time.Second)
	if err := s.HoldRateLimit(testkit.Context(t), app, account, long, t0); err != nil {
		t.Fatal(err)
	}
	// An older, shorter answer from another replica does not shorten it.
	if err := s.HoldRateLimit(testkit.Context(t), app, account, t0.Add(10*time.Second), t0); err != nil {
		t.Fatal(err)
	}
	if got, err := s.RateLimitHold(testkit.Context(t), app, account); err != nil || !got.Equal(long) {
		t.Errorf("hold %v (%v), want %v", got, err, long)
	}
	// A later window's hold replaces a passed one.
	next := t0.Add(20 * time.Minute)
	if err := s.HoldRateLimit(testkit.Context(t), app, account, next, t0.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.RateLimitHold(testkit.Context(t), app, account); !got.Equal(next) {
		t.Errorf("hold %v, want %v", got, next)
	}
	// Per install: another account has none.
	if got, _ := s.RateLimitHold(testkit.Context(t), app, other); !got.IsZero() {
		t.Errorf("another account holds until %v", got)
	}
}
