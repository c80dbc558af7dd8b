package harness

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/irisx-broker/irisx-broker/bench/loadgen"
)

// StampedeResult is what n concurrent token calls got.
type StampedeResult struct {
	// OK counts 200 answers; Failed the others, FirstFailure describes one.
	OK, Failed   int
	FirstFailure string
	// Tokens is the number of distinct access tokens handed out.
	Tokens int
}

// Stampede releases n GetToken calls for one install at the same moment,
// each on its own connection, spread round-robin over the brokers'
// internal URLs, and tallies the answers. Callers count the upstream calls
// at the simulator.
func Stampede(ctx context.Context, internalURLs []string, app, account string, n int) StampedeResult {
	return StampedeCalls(ctx, internalURLs, GetTokenPath, TokenRequestBody(app, account), n)
}

// StampedeCalls is Stampede for any TokenService route and body (see
// TokenJSON), e.g. GetApiUserToken for one API user.
func StampedeCalls(ctx context.Context, internalURLs []string, path string, body []byte, n int) StampedeResult {
	client := &http.Client{
		// One connection per caller: keep-alive off and no shared pool.
		Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0, DialContext: loadgen.DialLoopback},
		Timeout:   30 * time.Second,
	}
	answers := make([]TokenAnswer, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i], errs[i] = TokenJSON(ctx, client, internalURLs[i%len(internalURLs)], path, body)
		}()
	}
	close(start)
	wg.Wait()

	var res StampedeResult
	tokens := map[string]bool{}
	for i, a := range answers {
		switch {
		case errs[i] != nil:
			res.Failed++
			if res.FirstFailure == "" {
				res.FirstFailure = errs[i].Error()
			}
		case a.HTTPStatus != http.StatusOK:
			res.Failed++
			if res.FirstFailure == "" {
				res.FirstFailure = fmt.Sprintf("answered %d %s", a.HTTPStatus, a.Code)
			}
		default:
			res.OK++
			tokens[a.AccessToken] = true
		}
	}
	res.Tokens = len(tokens)
	return res
}
