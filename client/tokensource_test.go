package client

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

var t0 = time.Date(2030, 5, 6, 7, 0, 0, 0, time.UTC)

// hourlyTokens answers call n with "tok-n", valid for an hour from t0 + (n-1)
// hours, as a broker would when each token is fetched near the previous
// one's expiry.
func hourlyTokens(n int) (*brokerv1.GetTokenResponse, error) {
	return &brokerv1.GetTokenResponse{
		AccessToken: "tok-" + strconv.Itoa(n),
		TokenType:   "Bearer",
		ExpiresAt:   timestamppb.New(t0.Add(time.Duration(n) * time.Hour)),
	}, nil
}

func TestTokenSourceReusesUntilMargin(t *testing.T) {
	broker := &fakeBroker{respond: hourlyTokens}
	srv := startBroker(t, broker)
	clock := testkit.NewClock(t0)
	c := New(srv.URL, "internal-secret", WithIrisAppID("@org/app"))
	c.now = clock.Now
	src := c.TokenSource(testkit.Context(t), "acc-1", "account.view")

	steps := []struct {
		at        time.Time
		wantToken string
		wantCalls int
	}{
		{t0, "tok-1", 1},
		{t0.Add(30 * time.Minute), "tok-1", 1},
		{t0.Add(time.Hour - expiryMargin - time.Second), "tok-1", 1},
		// Within the margin: renewed although not yet expired.
		{t0.Add(time.Hour - expiryMargin), "tok-2", 2},
		{t0.Add(90 * time.Minute), "tok-2", 2},
		// Long past expiry: renewed.
		{t0.Add(5 * time.Hour), "tok-3", 3},
	}
	for _, step := range steps {
		clock.Set(step.at)
		tok, err := src.Token()
		if err != nil {
			t.Fatalf("at %v: Token: %v", step.at, err)
		}
		if tok.AccessToken != step.wantToken {
			t.Errorf("at %v: got %q, want %q", step.at, tok.AccessToken, step.wantToken)
		}
		if n := len(broker.Calls()); n != step.wantCalls {
			t.Errorf("at %v: %d broker calls, want %d", step.at, n, step.wantCalls)
		}
	}

	// Every fetch asks for a token that outlives the reuse margin, so the
	// broker never hands back one the source would discard at once.
	want := &brokerv1.GetTokenRequest{
		IrisAppId:       "@org/app",
		AccountId:       "acc-1",
		Scopes:          []string{"account.view"},
		MinValidSeconds: int32(expiryMargin / time.Second),
	}
	for i, call := range broker.Calls() {
		if diff := cmp.Diff(want, call.Msg, protocmp.Transform()); diff != "" {
			t.Errorf("call %d request (-want +got):\n%s", i+1, diff)
		}
	}
}

func TestTokenSourceDoesNotCacheErrors(t *testing.T) {
	broker := &fakeBroker{respond: func(n int) (*brokerv1.GetTokenResponse, error) {
		if n == 1 {
			return nil, connect.NewError(connect.CodeUnavailable, errors.New("trackunit down"))
		}
		return hourlyTokens(1)
	}}
	srv := startBroker(t, broker)
	c := New(srv.URL, "internal-secret")
	c.now = testkit.NewClock(t0).Now
	src := c.TokenSource(testkit.Context(t), "acc-1")

	if _, err := src.Token(); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("first Token: err %v, want code unavailable", err)
	}
	tok, err := src.Token()
	if err != nil {
		t.Fatalf("second Token: %v", err)
	}
	if tok.AccessToken != "tok-1" {
		t.Errorf("second Token: got %q, want %q", tok.AccessToken, "tok-1")
	}
}

func TestTokenSourceConcurrentCallersShareOneFetch(t *testing.T) {
	broker := &fakeBroker{respond: hourlyTokens}
	srv := startBroker(t, broker)
	c := New(srv.URL, "internal-secret", WithGRPC())
	c.now = testkit.NewClock(t0).Now
	src := c.TokenSource(testkit.Context(t), "acc-1")

	const callers = 16
	got := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			tok, err := src.Token()
			if err != nil {
				t.Errorf("Token: %v", err)
				return
			}
			got[i] = tok.AccessToken
		})
	}
	wg.Wait()
	for i, g := range got {
		if g != "tok-1" {
			t.Errorf("caller %d got %q, want tok-1", i, g)
		}
	}
	if n := len(broker.Calls()); n != 1 {
		t.Errorf("%d broker calls, want 1", n)
	}
}
