package drills

import (
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// drillStampede sends `callers` concurrent cold GetToken calls for one
// install to each of `instances` brokers on one database, while the auth
// server is slow, and checks that every caller got the token and that each
// broker called the auth server once at most.
func drillStampede(t *testing.T, callers, instances int) {
	ctx := testkit.ContextWithin(t, 3*time.Minute)
	dbURL := testdb.NewDatabase(t)
	sim := newSim(t, trackunitsim.Options{})
	keys := newKeys(t)
	var urls []string
	var first *harness.Child
	for i := range instances {
		c := startChild(t, ctx, dbURL, keys, sim, nil)
		if i == 0 {
			first = c
		}
		urls = append(urls, c.InternalURL())
	}
	cb, err := harness.NewCallback(sim.Sim, harness.App, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := cb.PostInstalled(ctx, loadgen.HTTP1Client(1), first.PublicURL()); err != nil {
		t.Fatal(err)
	}
	// Slow enough that every caller arrives while the first fetch runs.
	sim.InjectFault(trackunitsim.EndpointAppToken, trackunitsim.Fault{Latency: 200 * time.Millisecond})
	res := harness.Stampede(ctx, urls, harness.App, cb.AccountID, callers)
	calls := sim.ClientCalls(cb.ClientID)
	if res.Failed > 0 {
		t.Errorf("%d of %d callers failed: %s", res.Failed, callers, res.FirstFailure)
	}
	if calls < 1 || calls > instances {
		t.Errorf("%d upstream calls for %d concurrent callers over %d broker(s), want 1 per broker at most", calls, callers, instances)
	}
	if res.Tokens > instances {
		t.Errorf("%d distinct tokens handed out by %d broker(s)", res.Tokens, instances)
	}
	t.Logf("stampede: %d concurrent cold GetToken over %d broker(s): %d ok, %d distinct token(s), %d upstream call(s)",
		callers, instances, res.OK, res.Tokens, calls)
}
