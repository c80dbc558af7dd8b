package testkit

import (
	"context"
	"testing"
	"time"
)

// Timeout bounds a Context: long enough for any one test under -race on a
// busy machine, short enough that a hang fails the test instead of the run.
const Timeout = 2 * time.Minute

// WaitTimeout is how long WaitFor polls before it fails the test.
const WaitTimeout = time.Minute

// pollInterval is how often WaitFor looks again.
const pollInterval = 10 * time.Millisecond

// Context returns a context for one test's calls, cancelled when the test
// ends and at the latest after Timeout. It is not t.Context(): that one is
// cancelled before the test's cleanups run, and cleanups often still talk
// to the database or a server.
func Context(t testing.TB) context.Context {
	t.Helper()
	return ContextWithin(t, Timeout)
}

// ContextWithin is Context with its own bound, for the long drills.
func ContextWithin(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitFor polls cond until it holds, failing the test with "timed out
// waiting for <what>" after WaitTimeout. It bounds a wait; it does not
// measure one.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitForWithin(t, WaitTimeout, what, cond)
}

// WaitForWithin is WaitFor with its own bound, for the long drills.
func WaitForWithin(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(pollInterval)
	}
}
