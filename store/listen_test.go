package store_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

type change struct{ App, Account string }

// listener runs Store.Listen until the test ends.
type listener struct {
	changes chan change
	resets  chan struct{}
}

func startListener(t *testing.T, s *store.Store) *listener {
	t.Helper()
	l := &listener{changes: make(chan change, 100), resets: make(chan struct{}, 100)}
	lctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Listen(lctx,
			func(app, acct string) { l.changes <- change{app, acct} },
			func() { l.resets <- struct{}{} }, nil)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Listen returned %v after its context ended, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Listen did not return after its context ended")
		}
	})
	return l
}

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(15 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func TestListenDeliversChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	l := startListener(t, e.store)
	receive(t, l.resets, "the first onReset")

	e.apply(t, installed(account, "cid", "s1", t0), store.OutcomeInstalled)             // notify
	e.apply(t, installed(account, "cid", "s1", t0), store.OutcomeInstalled)             // idempotent: none
	e.apply(t, installed(account, "cid", "s0", t0.Add(-time.Hour)), store.OutcomeStale) // none
	ignored := installed(account, "cid", "s9", t0.Add(time.Hour))
	ignored.Type = "OTHER"
	e.apply(t, ignored, store.OutcomeIgnored)                                                                    // none
	e.apply(t, installed(account, "cid", "s2", t0.Add(time.Second)), store.OutcomeInstalled)                     // notify
	e.apply(t, uninstalled(account, t0.Add(2*time.Second)), store.OutcomeUninstalled)                            // notify
	e.apply(t, uninstalled(account, t0.Add(3*time.Second)), store.OutcomeUninstalled)                            // none
	e.apply(t, installed(other, "cid", "x", t0), store.OutcomeInstalled)                                         // notify
	if err := e.store.MarkCredentialsRejected(testkit.Context(t), app, other, 1, "invalid_client"); err != nil { // notify
		t.Fatal(err)
	}
	if err := e.store.MarkCredentialsRejected(testkit.Context(t), app, other, 1, "invalid_client"); err != nil { // none
		t.Fatal(err)
	}
	if err := e.store.RecordTokenResults(testkit.Context(t), []store.TokenResult{{IrisAppID: app, AccountID: other, At: t0}}); err != nil { // none
		t.Fatal(err)
	}
	// A sentinel: notifications arrive in commit order, so anything sent
	// by the "none" steps would arrive before it.
	sentinel := "6f1c0e9a-1b2c-4d3e-8f40-0000000000ff"
	e.apply(t, installed(sentinel, "cid", "x", t0), store.OutcomeInstalled)
	e.apply(t, installed(sentinel, "cid", "y", t0), store.OutcomeInstalled)

	want := []change{{app, account}, {app, account}, {app, other}, {app, sentinel}}
	var got []change
	for range want {
		got = append(got, receive(t, l.changes, "a change notification"))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("notifications (-want +got):\n%s", diff)
	}
}

// TestListenResetsAfterConnectionLoss kills the listening backend: Listen
// reconnects, calls onReset, and keeps delivering.
func TestListenResetsAfterConnectionLoss(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	l := startListener(t, e.store)
	receive(t, l.resets, "the first onReset")
	e.apply(t, installed(account, "cid", "s1", t0), store.OutcomeInstalled)
	e.apply(t, installed(account, "cid", "s2", t0), store.OutcomeInstalled)
	receive(t, l.changes, "a change before the kill")

	n := e.count(t, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, store.ListenApplicationName)
	if n != 1 {
		t.Fatalf("terminated %d listening backends, want 1", n)
	}
	receive(t, l.resets, "onReset after the reconnect")
	e.apply(t, installed(account, "cid", "s3", t0.Add(time.Second)), store.OutcomeInstalled)
	if got := receive(t, l.changes, "a change after the reconnect"); got != (change{app, account}) {
		t.Errorf("change after reconnect = %v", got)
	}
}

// eventsRecorder is a store.EventsListener for tests.
type eventsRecorder struct {
	numbered  chan struct{}
	listening chan bool
}

func (r *eventsRecorder) EventsNumbered()         { r.numbered <- struct{}{} }
func (r *eventsRecorder) EventsListening(ok bool) { r.listening <- ok }

// TestListenHearsEventsOnTheSameConnection: with an EventsListener, the
// one listening connection also carries the sequencer's notifications,
// and the listener is told when that connection is lost and back.
func TestListenHearsEventsOnTheSameConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := &eventsRecorder{numbered: make(chan struct{}, 100), listening: make(chan bool, 100)}
	e.store.SetEventsListener(rec)
	l := startListener(t, e.store)
	receive(t, l.resets, "the first onReset")
	if !receive(t, rec.listening, "EventsListening after the connect") {
		t.Fatal("EventsListening(false) before any connection was lost")
	}
	if n := e.count(t, `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, store.ListenApplicationName); n != 1 {
		t.Fatalf("%d listening connections, want 1", n)
	}

	e.apply(t, installed(account, "cid", "s1", t0), store.OutcomeInstalled) // a first install: no change sent
	e.apply(t, installed(account, "cid", "s2", t0.Add(time.Second)), store.OutcomeInstalled)
	if err := e.store.NumberCommittedEvents(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	receive(t, rec.numbered, "the events-numbered notification")
	if got := receive(t, l.changes, "the install change"); got != (change{app, account}) {
		t.Errorf("change = %v", got)
	}

	if n := e.count(t, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, store.ListenApplicationName); n != 1 {
		t.Fatalf("terminated %d listening backends, want 1", n)
	}
	if receive(t, rec.listening, "EventsListening after the kill") {
		t.Fatal("EventsListening(true) right after the connection was killed, want false first")
	}
	if !receive(t, rec.listening, "EventsListening after the reconnect") {
		t.Fatal("EventsListening(false) twice, want true after the reconnect")
	}
	e.apply(t, installed(other, "cid", "s1", t0), store.OutcomeInstalled)
	if err := e.store.NumberCommittedEvents(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	receive(t, rec.numbered, "an events-numbered notification after the reconnect")
}

// A DATABASE_DIRECT_URL server that accepts connections and never answers
// (a half-dead proxy) does not hold Listen in its connect forever: the
// connect gives up after the default time-out, onLost hears of it, and
// Listen tries again.
func TestListenConnectTimesOut(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() }) // held open, never answered
		}
	}()
	e := newEnv(t)
	s := store.New(e.pool, e.keys, store.WithListenURL("postgres://irisx@"+ln.Addr().String()+"/irisx?sslmode=disable"))
	lost := make(chan error, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Listen(ctx, func(string, string) {}, func() {}, func(err error) { lost <- err })
	}()
	t.Cleanup(func() { cancel(); <-done })
	if err := receive(t, lost, "onLost after the connect timed out"); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Errorf("onLost(%v), want the connect's failure", err)
	}
}
