package bench

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/harness"
	"github.com/irisx-broker/irisx-broker/bench/loadgen"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// The API user of the stampede: its name at the broker and its Trackunit
// user name at the simulator.
const (
	stampedeAPIUser     = "bench-reporting"
	stampedeAPIUsername = "bench-api-user@example.com"
)

// replicaMemory is longer than a replica serves the API-user token it
// remembers without asking the database again (token.Config's Revalidate,
// 1 s by default for API users, which serve does not change), so after it
// every replica sees the expired token in the database.
const replicaMemory = 1500 * time.Millisecond

// apiUserStampede is what n concurrent GetApiUserToken calls, all needing
// the same refresh, cost upstream and got.
type apiUserStampede struct {
	// Refresh and Password count the /token calls by grant during the
	// stampede; Reuse counts spent refresh tokens presented again, which
	// revokes the user's whole token chain at Trackunit (whole run).
	Refresh, Password, Reuse int
	Result                   harness.StampedeResult
}

// figures renders the table lines and whether each meets its target: exactly
// one refresh, no password grant, no reuse; every caller answered, all with
// the one new token.
func (s apiUserStampede) figures(n int) (upstream, answers Figure) {
	const area = "Stampede"
	upstream = Figure{Area: area,
		Name: fmt.Sprintf("%d concurrent GetApiUserToken needing a refresh, 3 instances, one database", n),
		Value: fmt.Sprintf("%d refresh_token + %d password grant(s) at /token, %d spent refresh token(s) reused",
			s.Refresh, s.Password, s.Reuse),
		Target: "1 refresh, 0 password, 0 reuse", Pass: pass(s.Refresh == 1 && s.Password == 0 && s.Reuse == 0)}
	answers = Figure{Area: area,
		Name:   fmt.Sprintf("%d concurrent GetApiUserToken: answers", n),
		Value:  fmt.Sprintf("%d OK, %d failed, %d distinct token(s)", s.Result.OK, s.Result.Failed, s.Result.Tokens),
		Target: "0 failed, 1 token", Pass: pass(s.Result.Failed == 0 && s.Result.Tokens == 1)}
	return upstream, answers
}

// apiUserStampede registers an API user through the first broker, obtains
// its first token (a password grant, which also yields its refresh token),
// ages that token past its expiry in the database, and releases n
// concurrent GetApiUserToken calls over the brokers while the simulator's
// /token answers after stampedeLatency. It counts the /token calls the
// simulator saw for the user during the stampede.
func (r *runner) apiUserStampede(ctx context.Context, brokers []*harness.Child, n int) (apiUserStampede, error) {
	user := harness.NewAPIUser(r.sim.Sim, stampedeAPIUser, stampedeAPIUsername)
	setup := loadgen.HTTP1Client(1)
	if err := user.Register(ctx, harness.APIUserClient(setup, brokers[0].InternalURL())); err != nil {
		return apiUserStampede{}, err
	}
	body := harness.APIUserTokenRequestBody(user.Name)
	first, err := harness.TokenJSON(ctx, setup, brokers[0].InternalURL(), harness.GetAPIUserTokenPath, body)
	if err != nil || first.HTTPStatus != http.StatusOK {
		return apiUserStampede{}, fmt.Errorf("first GetApiUserToken: %d %s: %v", first.HTTPStatus, first.Code, err)
	}
	if err := harness.ExpireAPIUserToken(ctx, r.dbURL, user.Name); err != nil {
		return apiUserStampede{}, err
	}
	select {
	case <-ctx.Done():
		return apiUserStampede{}, ctx.Err()
	case <-time.After(replicaMemory):
	}

	refresh0 := r.sim.UserCalls(user.Username, trackunitsim.GrantRefreshToken)
	password0 := r.sim.UserCalls(user.Username, trackunitsim.GrantPassword)
	r.report.detail("Stampede", "API user registered with CreateApiUser, first GetApiUserToken: %d password grant(s), "+
		"%d refresh(es); then its cached token was aged past expiry in the database", password0, refresh0)

	res := r.heldStampede(ctx, trackunitsim.EndpointToken, brokers, harness.GetAPIUserTokenPath, body, n)
	s := apiUserStampede{
		Refresh:  r.sim.UserCalls(user.Username, trackunitsim.GrantRefreshToken) - refresh0,
		Password: r.sim.UserCalls(user.Username, trackunitsim.GrantPassword) - password0,
		Reuse:    r.sim.SpentRefreshReuse(),
		Result:   res,
	}
	r.report.detail("Stampede", "%d GetApiUserToken callers over %d broker(s): %d answered 200, %d failed, "+
		"%d distinct token(s); /token calls: %d refresh_token, %d password; spent refresh tokens reused: %d",
		n, len(brokers), res.OK, res.Failed, res.Tokens, s.Refresh, s.Password, s.Reuse)
	if res.FirstFailure != "" {
		r.report.detail("Stampede", "GetApiUserToken first failure: %s", res.FirstFailure)
	}
	return s, nil
}
