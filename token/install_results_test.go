package token

import (
	"context"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testkit"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/store"
)

func TestRunWritesCoalescedResults(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.FlushInterval = 5 * time.Millisecond })
	e.st.install(testApp, "acct-1", testSecret)
	e.st.install(testApp, "acct-2", testSecret)
	ctx := testkit.Context(t)

	// Queued before Run starts, so they coalesce into one batch.
	if _, err := e.b.Token(ctx, req("acct-1")); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	e.up.setScript(jsonReply(400, `{"error":"invalid_scope"}`))
	if _, err := e.b.Token(ctx, req("acct-2", "bad.scope")); err == nil {
		t.Fatal("want invalid_scope")
	}
	e.clock.Advance(time.Second)
	if _, err := e.b.Token(ctx, req("acct-2")); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { e.b.Run(runCtx); close(done) }()
	testkit.WaitFor(t, "a batch", func() bool { return len(e.st.getResults()) > 0 })
	want := [][]store.TokenResult{{
		{IrisAppID: testApp, AccountID: "acct-1", At: epoch},
		{IrisAppID: testApp, AccountID: "acct-2", At: epoch.Add(2 * time.Second)},
	}}
	if diff := cmp.Diff(want, e.st.getResults()); diff != "" {
		t.Errorf("batches (-want +got):\n%s", diff)
	}

	// A result arriving just before shutdown is still written.
	e.up.setScript(jsonReply(503, `{}`), jsonReply(503, `{}`), jsonReply(503, `{}`))
	if _, err := e.b.Token(ctx, req("acct-3")); err == nil {
		t.Fatal("want not found")
	}
	e.st.install(testApp, "acct-3", testSecret)
	if _, err := e.b.Token(ctx, req("acct-3")); err == nil {
		t.Fatal("want unavailable")
	}
	stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	got := e.st.getResults()
	last := got[len(got)-1]
	if diff := cmp.Diff([]store.TokenResult{{IrisAppID: testApp, AccountID: "acct-3", At: epoch.Add(2 * time.Second), LastError: "unavailable"}}, last); diff != "" {
		t.Errorf("last batch (-want +got):\n%s", diff)
	}
}

func TestRecordDropsInsteadOfBlocking(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ResultBuffer = 2 })
	f := fetchReq{app: testApp, account: "acct-1"}
	for range 5 {
		e.b.record(f, "") // would block forever if it waited for Run
	}
	if got := e.b.dropped.Load(); got != 3 {
		t.Errorf("dropped = %d, want 3", got)
	}
	ctx, stop := context.WithCancel(testkit.Context(t))
	stop()
	e.b.Run(ctx) // drains and writes what was kept, then returns
	want := [][]store.TokenResult{{{IrisAppID: testApp, AccountID: "acct-1", At: epoch}}}
	if diff := cmp.Diff(want, e.st.getResults()); diff != "" {
		t.Errorf("batches (-want +got):\n%s", diff)
	}
	if got := e.b.dropped.Load(); got != 0 {
		t.Errorf("dropped counter not reset after being logged: %d", got)
	}
}

func TestMergeKeepsLatest(t *testing.T) {
	pending := map[string]store.TokenResult{}
	merge(pending, store.TokenResult{IrisAppID: "a", AccountID: "1", At: epoch.Add(time.Second), LastError: "unavailable"})
	merge(pending, store.TokenResult{IrisAppID: "a", AccountID: "1", At: epoch}) // older: ignored
	merge(pending, store.TokenResult{IrisAppID: "a", AccountID: "2", At: epoch})
	want := map[string]store.TokenResult{
		"a\x001": {IrisAppID: "a", AccountID: "1", At: epoch.Add(time.Second), LastError: "unavailable"},
		"a\x002": {IrisAppID: "a", AccountID: "2", At: epoch},
	}
	if diff := cmp.Diff(want, pending); diff != "" {
		t.Errorf("pending (-want +got):\n%s", diff)
	}
}
