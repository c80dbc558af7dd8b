package bench

import (
	"context"
	"fmt"
	"strings"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// stampedeAPIKey is the API key of the stampede, by its name at the broker.
const stampedeAPIKey = "bench-api-key"

// apiKeyStampede registers an API key through the first broker and releases
// n concurrent cold GetApiKeyToken calls over the brokers while the
// simulator's /token/v2 answers after stampedeLatency. It returns the
// number of /token/v2 calls the simulator saw for the key.
func (r *runner) apiKeyStampede(ctx context.Context, brokers []*harness.Child, n int) (int, error) {
	key := harness.NewAPIKey(r.sim.Sim, stampedeAPIKey, strings.Fields(harness.DefaultScopes))
	if err := key.Register(ctx, harness.APIKeyClient(loadgen.HTTP1Client(1), brokers[0].InternalURL())); err != nil {
		return 0, err
	}
	res := r.heldStampede(ctx, trackunitsim.EndpointTokenV2, brokers, harness.GetAPIKeyTokenPath,
		harness.APIKeyTokenRequestBody(key.Name), n)
	calls := r.sim.ClientCalls(key.ClientID)
	r.report.detail("Stampede", "%d cold GetApiKeyToken callers over %d broker(s): %d answered 200, %d failed, %d distinct token(s), %d /token/v2 call(s)",
		n, len(brokers), res.OK, res.Failed, res.Tokens, calls)
	if res.Failed > 0 {
		return calls, fmt.Errorf("%d of %d API key stampede calls failed: %s", res.Failed, n, res.FirstFailure)
	}
	if res.Tokens != 1 {
		return calls, fmt.Errorf("API key stampede: %d distinct tokens handed out, want 1", res.Tokens)
	}
	return calls, nil
}
