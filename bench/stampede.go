package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// stampedeLatency holds /apptoken's (and for API users /token's) answer
// back so that every caller arrives while the one fetch is in flight.
const stampedeLatency = 200 * time.Millisecond

// stampedePhase sends n concurrent cold GetToken calls for one install to
// one broker, then to three brokers on the same database, then n
// concurrent GetApiUserToken calls for one API user whose token needs a
// refresh, then n cold GetApiKeyToken calls for one API key, both to the
// three brokers, and counts the upstream calls at the simulator.
func (r *runner) stampedePhase(ctx context.Context) (err error) {
	const area = "Stampede"
	n := r.sc.stampede
	one, err := r.stampede(ctx, []*harness.Child{r.primary}, n)
	if err != nil {
		return err
	}
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("%d concurrent cold GetToken, 1 instance", n),
		Value: fmt.Sprintf("%d upstream call(s)", one), Target: "1", Pass: pass(one == 1)})

	// Two more instances; their pools are small, the database's
	// connections are shared with everything else on the machine. They
	// skip migrating: golang-migrate passes pool_max_conns on to Postgres,
	// which refuses it (the first instance migrated already).
	var children []*harness.Child
	defer func() {
		for _, c := range children {
			err = errors.Join(err, stopChild(c))
		}
	}()
	small, err := withPoolSize(r.dbURL, 4)
	if err != nil {
		return err
	}
	for range 2 {
		c, err := r.startBroker(ctx, map[string]string{"DATABASE_URL": small}, "serve", "--migrate=false")
		if err != nil {
			return err
		}
		children = append(children, c)
		if _, err := c.WaitReady(ctx); err != nil {
			return err
		}
	}
	three, err := r.stampede(ctx, append([]*harness.Child{r.primary}, children...), n)
	if err != nil {
		return err
	}
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("%d concurrent cold GetToken, 3 instances, one database", n),
		Value: fmt.Sprintf("%d upstream call(s)", three), Target: "≤ 3", Pass: pass(three <= 3)})
	// The token core shares a minted token fleet-wide through the
	// database: one install, one mint, however many instances.
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("upstream mints, %d cold callers over 3 instances", n),
		Value: fmt.Sprintf("%d mint(s) for 1 install", three), Baseline: "1 install",
		Ratio: fmt.Sprintf("%d", three), Target: "1", Pass: pass(three == 1)})

	// API users: rotating refresh tokens, so a second refresh is not just
	// waste but presents a spent token, which revokes the user's chain.
	au, err := r.apiUserStampede(ctx, append([]*harness.Child{r.primary}, children...), n)
	if err != nil {
		return err
	}
	upstream, answers := au.figures(n)
	r.report.add(upstream)
	r.report.add(answers)
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("upstream mints, %d cold callers over 3 instances, API user (/token refresh)", n),
		Value: fmt.Sprintf("%d refresh(es) for 1 API user", au.Refresh+au.Password), Baseline: "1 API user",
		Ratio: fmt.Sprintf("%d", au.Refresh+au.Password), Target: "1", Pass: pass(au.Refresh+au.Password == 1)})

	keyMints, err := r.apiKeyStampede(ctx, append([]*harness.Child{r.primary}, children...), n)
	if err != nil {
		return err
	}
	r.report.add(Figure{Area: area, Name: fmt.Sprintf("upstream mints, %d cold callers over 3 instances, API key (/token/v2)", n),
		Value: fmt.Sprintf("%d mint(s) for 1 API key", keyMints), Baseline: "1 API key",
		Ratio: fmt.Sprintf("%d", keyMints), Target: "1", Pass: pass(keyMints == 1)})
	r.report.note(area, "%d cold callers spread over three broker processes on one database made %d /apptoken call(s) for one "+
		"install, %d /token call(s) for one API user's refresh and %d /token/v2 call(s) for one API key. The token core "+
		"coordinates a mint through the database: the first instance to find no usable token takes a short lease on the "+
		"credential's row, releases its connection, calls Trackunit and commits the sealed token; the other instances and "+
		"their callers wait for that row instead of minting (their own callers share one flight per instance).",
		n, three, au.Refresh+au.Password, keyMints)
	return nil
}

// heldStampede releases n concurrent calls of a TokenService route over
// the brokers, round-robin, while the simulator holds every answer of
// endpoint back by stampedeLatency, so that all callers arrive while the
// first fetch is in flight.
func (r *runner) heldStampede(ctx context.Context, endpoint string, brokers []*harness.Child, path string, body []byte, n int) harness.StampedeResult {
	urls := make([]string, len(brokers))
	for i, b := range brokers {
		urls[i] = b.InternalURL()
	}
	r.sim.InjectFault(endpoint, trackunitsim.Fault{Latency: stampedeLatency})
	defer r.sim.ClearFaults()
	return harness.StampedeCalls(ctx, urls, path, body, n)
}

// withPoolSize sets pool_max_conns in a database URL.
func withPoolSize(dbURL string, n int) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("pool_max_conns", strconv.Itoa(n))
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// stampede installs a new account through the first broker and releases n
// concurrent GetToken calls for it over the brokers; it returns the number
// of /apptoken calls the simulator saw for the install's credentials.
func (r *runner) stampede(ctx context.Context, brokers []*harness.Child, n int) (int, error) {
	cb, err := harness.NewCallback(r.sim.Sim, harness.App, true)
	if err != nil {
		return 0, err
	}
	if err := cb.PostInstalled(ctx, loadgen.HTTP1Client(1), brokers[0].PublicURL()); err != nil {
		return 0, err
	}
	res := r.heldStampede(ctx, trackunitsim.EndpointAppToken, brokers, harness.GetTokenPath,
		harness.TokenRequestBody(harness.App, cb.AccountID), n)
	calls := r.sim.ClientCalls(cb.ClientID)
	r.report.detail("Stampede", "%d callers over %d broker(s): %d answered 200, %d failed, %d distinct token(s), %d /apptoken call(s)",
		n, len(brokers), res.OK, res.Failed, res.Tokens, calls)
	if res.Failed > 0 {
		return calls, fmt.Errorf("%d of %d stampede calls failed: %s", res.Failed, n, res.FirstFailure)
	}
	return calls, nil
}
