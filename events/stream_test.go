package events_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/store"
)

var errStop = errors.New("stop")

// WatchEvents: a stream cut after some events and resumed from the last id
// seen has no gap and no duplicate, and a new event arrives within a
// second of its commit (a generous bound: the notification is immediate).
func TestWatchResumeAndPromptness(t *testing.T) {
	t.Parallel()
	dbURL := testdb.NewDatabase(t)
	r := newRig(t, "", dbURL, nil)
	s := startStream(t, r.st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	for i := range 5 {
		r.install(t, i, "a")
	}
	// First connection: read three, then disconnect.
	var first []string
	var last int64
	err := s.Watch(ctx, 0, func(ev store.LifecycleEvent) error {
		first = append(first, ev.ID())
		last = ev.Seq
		if len(first) == 3 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Watch: %v", err)
	}
	for i := 5; i < 8; i++ {
		r.install(t, i, "a")
	}
	// Resume from the last id: the rest, then a new one promptly.
	got := make(chan store.LifecycleEvent, 100)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		_ = s.Watch(wctx, last, func(ev store.LifecycleEvent) error { got <- ev; return nil })
	}()
	var resumed []string
	for len(resumed) < 5 {
		select {
		case ev := <-got:
			resumed = append(resumed, ev.ID())
		case <-time.After(5 * time.Second):
			t.Fatalf("resumed stream stalled after %v", resumed)
		}
	}
	all := r.events(t)
	var want []string
	for _, ev := range all {
		want = append(want, ev.ID())
	}
	if gotAll := append(first, resumed...); !equal(gotAll, want) {
		t.Fatalf("first %v + resumed %v, want %v", first, resumed, want)
	}
	// Let the watcher settle into waiting, then commit a new event.
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	r.install(t, 100, "a")
	select {
	case ev := <-got:
		lat := time.Since(start)
		t.Logf("new event arrived %s after the callback began", lat)
		if lat > time.Second {
			t.Errorf("new event after %s, want within 1 s", lat)
		}
		if ev.AccountID != account(100) {
			t.Errorf("got %s for %s", ev.ID(), ev.AccountID)
		}
	case <-time.After(time.Second):
		t.Fatal("no new event within 1 s")
	}
	select {
	case ev := <-got:
		t.Errorf("unexpected extra event %s", ev.ID())
	case <-time.After(100 * time.Millisecond):
	}
}

// An event committed on another replica (whose sequencer does not run)
// reaches this replica's watcher within a second: this replica's sequencer
// finds it by polling, numbers it and wakes the watcher.
func TestWatchSeesOtherReplicasEvents(t *testing.T) {
	t.Parallel()
	dbURL := testdb.NewDatabase(t)
	here := newRig(t, "", dbURL, nil)
	there := newRig(t, "", dbURL, nil)
	s := startStream(t, here.st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan store.LifecycleEvent, 10)
	go func() {
		_ = s.Watch(ctx, 0, func(ev store.LifecycleEvent) error { got <- ev; return nil })
	}()
	time.Sleep(200 * time.Millisecond) // the watcher is waiting
	for i := range 3 {
		start := time.Now()
		there.install(t, i, "a")
		select {
		case ev := <-got:
			t.Logf("event from the other replica arrived %s after its callback began", time.Since(start))
			if ev.AccountID != account(i) {
				t.Errorf("got %s for %s, want %s", ev.ID(), ev.AccountID, account(i))
			}
		case <-time.After(time.Second):
			t.Fatalf("event %d from the other replica not within 1 s", i)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
