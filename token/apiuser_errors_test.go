package token

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testkit"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// Credentials Trackunit refuses mark the user credentials_rejected after
// one password grant; later calls on every replica fail without calling
// Trackunit until the credentials are replaced.
func TestAPIUserRejectedCredentials(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		wrong    func(*testUser)
		wantCode string
	}{
		{"wrong password", func(u *testUser) { u.password = "not-the-password" }, "invalid_grant"},
		{"wrong client secret", func(u *testUser) { u.clientSecret = "not-the-secret" }, "invalid_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newUserEnv(t, trackunitsim.Options{})
			right := e.register("rejected")
			wrong := right
			tc.wrong(&wrong)
			e.save(wrong)
			a, b := e.replica(nil), e.replica(nil)

			var errs []error
			for i := range 10 {
				for _, r := range []*APIUserTokens{a, b} {
					_, err := r.Token(testkit.Context(t), right.name, 0)
					if !errors.Is(err, ErrAPIUserRejected) || !errors.Is(err, ErrCredentialsRejected) {
						t.Fatalf("call %d: %v, want ErrAPIUserRejected", i, err)
					}
					errs = append(errs, err)
				}
				e.clock.Advance(600 * time.Millisecond) // replicas re-read the database
			}
			if pw, rt := e.calls(right); pw+rt != 1 {
				t.Errorf("20 calls made %d password and %d refresh grants, want one password grant", pw, rt)
			}
			got := e.listed(right.name)
			if got.Status != store.APIUserCredentialsRejected || got.LastError != tc.wantCode {
				t.Errorf("listed as %q with last error %q, want credentials_rejected and %q", got.Status, got.LastError, tc.wantCode)
			}
			for _, err := range errs {
				assertNoLeak(t, "error", err.Error(), append(right.secrets(), wrong.secrets()...))
			}

			e.save(right) // CreateApiUser with the same name replaces them
			a.Invalidate(right.name)
			e.token(a, right.name)
			e.clock.Advance(time.Second)
			e.token(b, right.name)
			if got := e.listed(right.name); got.Status != store.APIUserActive || got.LastError != "" {
				t.Errorf("after replacing the credentials: %q, last error %q", got.Status, got.LastError)
			}
		})
	}
}

// A refused refresh token costs one password grant; if that is refused too,
// the user is rejected.
func TestAPIUserRefreshRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		changePassword bool
		wantStatus     store.APIUserStatus
	}{
		{"refresh token revoked", false, store.APIUserActive},
		{"password changed at Trackunit", true, store.APIUserCredentialsRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newUserEnv(t, trackunitsim.Options{})
			u := e.register("revoked")
			b := e.replica(nil)
			e.token(b, u.name)
			e.sim.RevokeRefreshTokens(u.username)
			if tc.changePassword {
				e.sim.AddUser(u.username, "a-new-password", u.clientID, u.clientSecret)
			}
			e.clock.Advance(2 * time.Hour)
			_, err := b.Token(testkit.Context(t), u.name, 0)
			if tc.changePassword != errors.Is(err, ErrAPIUserRejected) || (!tc.changePassword && err != nil) {
				t.Fatalf("Token: %v", err)
			}
			pw, rt := e.calls(u)
			if diff := cmp.Diff([]int{2, 1}, []int{pw, rt}); diff != "" {
				t.Errorf("[password, refresh] grants (-want +got):\n%s", diff)
			}
			if got := e.listed(u.name).Status; got != tc.wantStatus {
				t.Errorf("status = %q, want %q", got, tc.wantStatus)
			}
		})
	}
}

// 429 and 5xx are retried with backoff (Retry-After honoured) as for
// installs; an outage that outlasts the attempts is ErrUnavailable without
// falling back to the password grant or marking anything, and the refresh
// token survives it. A token still valid is served meanwhile.
func TestAPIUserUpstreamFailures(t *testing.T) {
	t.Parallel()
	e := newUserEnv(t, trackunitsim.Options{})
	u := e.register("outage")
	b := e.replica(nil)
	tok := e.token(b, u.name)

	e.clock.Advance(2 * time.Hour)
	e.sim.InjectFault(trackunitsim.EndpointToken, trackunitsim.Fault{Status: 429, RetryAfter: "7"})
	if _, err := b.Token(testkit.Context(t), u.name, 0); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrCredentialsRejected) {
		t.Fatalf("Token during an outage: %v, want ErrUnavailable", err)
	}
	pw, rt := e.calls(u)
	if diff := cmp.Diff([]int{1, 3}, []int{pw, rt}); diff != "" {
		t.Errorf("[password, refresh] grants during the outage (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]time.Duration{7 * time.Second, 7 * time.Second}, e.sleeps.get()); diff != "" {
		t.Errorf("backoff waits (-want +got):\n%s", diff)
	}
	if got := e.listed(u.name); got.Status != store.APIUserActive || got.LastError != "rate_limited" {
		t.Errorf("after the outage: %q, last error %q; want active, rate_limited", got.Status, got.LastError)
	}

	e.sim.InjectFault(trackunitsim.EndpointToken, trackunitsim.Fault{Status: 503, Times: 2})
	tok2 := e.token(b, u.name)
	if pw, rt := e.calls(u); pw != 1 || rt != 6 || tok2 == tok {
		t.Errorf("after two 503s: %d password and %d refresh grants, want 1 and 6", pw, rt)
	}

	// 3 minutes left, inside the margin: served while the background
	// refresh fails, and not retried before refreshRetryDelay.
	e.clock.Advance(57 * time.Minute)
	e.sim.InjectFault(trackunitsim.EndpointToken, trackunitsim.Fault{Status: 500})
	for range 2 {
		if got := e.token(b, u.name); got != tok2 {
			t.Fatal("a valid token was not served during an outage")
		}
		b.b.bg.Wait()
	}
	if _, rt := e.calls(u); rt != 9 {
		t.Errorf("refresh grants = %d, want 9: one failed background refresh of 3 attempts", rt)
	}
	e.sim.ClearFaults()
	e.clock.Advance(refreshRetryDelay + time.Second)
	e.token(b, u.name)
	b.b.bg.Wait()
	e.clock.Advance(2 * time.Second)
	if got := e.token(b, u.name); got == tok2 {
		t.Error("the token was not renewed once Trackunit recovered")
	}
}

// No password, client credential, refresh or access token appears in the
// logs, in errors, in listings, or in any table as text or hex.
func TestAPIUserSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	e := newUserEnv(t, trackunitsim.Options{})
	good, bad := e.register("good"), e.register("bad")
	bad.password = "wrong-password-for-leak-test"
	e.save(bad)
	b := e.replica(nil)

	secrets := append(good.secrets(), bad.secrets()...)
	var texts []string
	note := func(err error) {
		if err != nil {
			texts = append(texts, err.Error(), fmt.Sprintf("%+v", err))
		}
	}
	e.token(b, good.name)
	secrets = append(secrets, e.refreshToken(good.name))
	_, err := b.Token(testkit.Context(t), bad.name, 0)
	note(err)
	e.clock.Advance(2 * time.Hour)
	e.sim.InjectFault(trackunitsim.EndpointToken, trackunitsim.Fault{Status: 503})
	_, err = b.Token(testkit.Context(t), good.name, 0)
	note(err)
	e.sim.ClearFaults()
	e.token(b, good.name)
	secrets = append(secrets, e.refreshToken(good.name))
	e.sim.RevokeRefreshTokens(good.username)
	e.clock.Advance(2 * time.Hour)
	e.token(b, good.name)
	secrets = append(secrets, e.refreshToken(good.name))
	secrets = append(secrets, e.handedOut...)

	users, err := e.admin.ListAPIUsers(testkit.Context(t))
	note(err)
	state := ""
	if _, err := e.admin.UpdateAPIUserLocked(testkit.Context(t), good.name, func(st store.APIUserState) (store.APIUserUpdate, error) {
		state = fmt.Sprintf("%v %+v %#v", st, st, st)
		return store.APIUserUpdate{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(e.handedOut) < 3 || len(secrets) < 12 {
		t.Fatalf("the scenario handed out %d tokens; the scan would prove little", len(e.handedOut))
	}
	assertNoLeak(t, "logs", e.logs.String(), secrets)
	for _, text := range texts {
		assertNoLeak(t, "an error", text, secrets)
	}
	assertNoLeak(t, "the listing", fmt.Sprintf("%+v", users), secrets)
	assertNoLeak(t, "a printed APIUserState", state, secrets)
	assertNoLeak(t, "the database", e.dump(), secrets)
	if !containsAll(e.logs.String(), "refresh token refused", "credentials rejected", "token endpoint unavailable") {
		t.Errorf("the scenario did not log the paths it should have:\n%s", e.logs.String())
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
