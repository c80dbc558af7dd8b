package testdb

import (
	"runtime"
	"testing"
)

// outcomeTB records whether a helper failed or skipped the test, without
// ending the real one.
type outcomeTB struct {
	testing.TB
	failed, skipped bool
}

func (o *outcomeTB) Fatal(args ...any)             { o.failed = true; runtime.Goexit() }
func (o *outcomeTB) Fatalf(string, ...any)         { o.failed = true; runtime.Goexit() }
func (o *outcomeTB) Skip(args ...any)              { o.skipped = true; runtime.Goexit() }
func (o *outcomeTB) Skipf(format string, _ ...any) { o.skipped = true; runtime.Goexit() }

func outcome(t *testing.T, fn func(testing.TB)) *outcomeTB {
	o := &outcomeTB{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); fn(o) }()
	<-done
	return o
}

// In CI a missing pgbouncer fails the PgBouncer suites; it never skips
// them. Elsewhere it skips.
func TestMissingPgBouncerFailsInCI(t *testing.T) {
	for ci, want := range map[string]string{"true": "failed", "": "skipped"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			o := outcome(t, missingPgBouncer)
			got := map[[2]bool]string{{true, false}: "failed", {false, true}: "skipped"}[[2]bool{o.failed, o.skipped}]
			if got != want {
				t.Errorf("CI=%q: failed %v, skipped %v; want %s", ci, o.failed, o.skipped, want)
			}
		})
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		out  string
		want bool
	}{
		{"PgBouncer 1.18.0\nlibevent 2.1.12-stable\n", false},
		{"PgBouncer 1.21.0\n", true},
		{"PgBouncer 1.24.1\nlibevent 2.1.12\n", true},
		{"PgBouncer 2.0.0", true},
		{"PgBouncer 1.9.2", false},
		{"garbage", false},
	} {
		if got := versionAtLeast(c.out, 1, 21); got != c.want {
			t.Errorf("versionAtLeast(%q, 1, 21) = %v, want %v", c.out, got, c.want)
		}
	}
}
