package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/derrors"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// Every store call that reaches the database says so when the database
// fails: the error wraps store.ErrDatabase, so every surface answers
// unavailable, and never one of the caller's classes. A closed pool fails
// every statement.
func TestDatabaseFailureIsUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply(t, installed(account, "cid", "s1", t0), store.OutcomeInstalled)
	e.pool.Close()
	s := e.store
	calls := map[string]func(context.Context) error{
		"Ping": s.Ping,
		"ApplyInstallEvent installed": func(c context.Context) error {
			_, err := s.ApplyInstallEvent(c, installed(account, "cid2", "s2", t0.Add(time.Minute)))
			return err
		},
		"ApplyInstallEvent other type": func(c context.Context) error {
			ev := uninstalled(account, t0.Add(time.Minute))
			ev.Type = "SOMETHING_ELSE"
			_, err := s.ApplyInstallEvent(c, ev)
			return err
		},
		"InstallCredentials": func(c context.Context) error { _, err := s.InstallCredentials(c, app, account); return err },
		"ListInstalls":       func(c context.Context) error { _, err := s.ListInstalls(c, store.ListFilter{}); return err },
		"GetInstall":         func(c context.Context) error { _, _, err := s.GetInstall(c, app, account, 5); return err },
		"InstallCounts":      func(c context.Context) error { _, err := s.InstallCounts(c); return err },
		"KeyIDs":             func(c context.Context) error { _, err := s.KeyIDs(c); return err },
		"KeyIDCounts":        func(c context.Context) error { _, err := s.KeyIDCounts(c); return err },
		"MarkCredentialsRejected": func(c context.Context) error {
			return s.MarkCredentialsRejected(c, app, account, 1, "invalid_client")
		},
		"RecordTokenResults": func(c context.Context) error {
			return s.RecordTokenResults(c, []store.TokenResult{{IrisAppID: app, AccountID: account, At: t0}})
		},
		"CreateAPIUser": func(c context.Context) error { _, err := s.CreateAPIUser(c, newUser("down")); return err },
		"ListAPIUsers":  func(c context.Context) error { _, err := s.ListAPIUsers(c); return err },
		"DeleteAPIUser": func(c context.Context) error { return s.DeleteAPIUser(c, "down") },
		"APIUserToken":  func(c context.Context) error { _, err := s.APIUserToken(c, "down"); return err },
		"RecordIdentityProfile": func(c context.Context) error {
			return s.RecordIdentityProfile(c, store.IdentityProfile{Verdict: store.VerdictAccepted, SeenAt: t0})
		},
		"ListIdentityProfiles": func(c context.Context) error {
			_, err := s.ListIdentityProfiles(c, store.VerdictAccepted, 10)
			return err
		},
		"RateLimitHold": func(c context.Context) error { _, err := s.RateLimitHold(c, app, account); return err },
		"HoldRateLimit": func(c context.Context) error { return s.HoldRateLimit(c, app, account, t0, t0) },
		"Reencrypt":     func(c context.Context) error { _, err := s.Reencrypt(c, 10, nil); return err },
	}
	for name, call := range calls {
		err := call(testkit.Context(t))
		if !errors.Is(err, store.ErrDatabase) || !errors.Is(err, derrors.ErrUnavailable) {
			t.Errorf("%s on a closed pool: %v, want store.ErrDatabase (unavailable)", name, err)
		}
		for _, wrong := range []error{derrors.ErrInvalid, derrors.ErrNotFound, derrors.ErrInternal, derrors.ErrRejected} {
			if errors.Is(err, wrong) {
				t.Errorf("%s on a closed pool: %v is also %v", name, err, wrong)
			}
		}
	}
}
