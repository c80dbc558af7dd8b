package store_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// TestConcurrentDeliveriesSerialise: deliveries for one new install race
// on the insert and the row lock; every one is applied exactly once.
func TestConcurrentDeliveriesSerialise(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 12
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(2)
		go func() { // the same credentials from every goroutine
			defer wg.Done()
			_, err := e.store.ApplyInstallEvent(testkit.Context(t), installed(account, "same", "same", t0))
			errs <- err
		}()
		go func() { // different credentials each
			defer wg.Done()
			_, err := e.store.ApplyInstallEvent(testkit.Context(t), installed(other, "cid", fmt.Sprint("secret-", i), t0))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent ApplyInstallEvent: %v", err)
		}
	}
	if v := e.raw(t, account).Version; v != 1 {
		t.Errorf("identical concurrent deliveries: version %d, want 1", v)
	}
	if v := e.raw(t, other).Version; v != n {
		t.Errorf("distinct concurrent deliveries: version %d, want %d", v, n)
	}
	if got := e.count(t, "SELECT count(*) FROM install_events"); got != 2*n {
		t.Errorf("%d events logged, want %d", got, 2*n)
	}
}

// TestRejectedCredentials covers MarkCredentialsRejected's version guard
// and the way back through a new INSTALLED.
func TestRejectedCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply(t, installed(account, "cid", "old", t0), store.OutcomeInstalled)
	e.apply(t, installed(account, "cid", "new", t0.Add(time.Second)), store.OutcomeInstalled)

	// A rejection observed with version 1 must not mark version 2.
	if err := e.store.MarkCredentialsRejected(testkit.Context(t), app, account, 1, "invalid_client"); err != nil {
		t.Fatal(err)
	}
	if got := e.creds(t, account).Status; got != store.StatusInstalled {
		t.Fatalf("stale rejection marked the install %q", got)
	}
	if err := e.store.MarkCredentialsRejected(testkit.Context(t), app, account, 2, "invalid_client"); err != nil {
		t.Fatal(err)
	}
	in, _, _ := e.store.GetInstall(testkit.Context(t), app, account, 0)
	if in.Status != store.StatusCredentialsRejected || in.LastError != "invalid_client" {
		t.Fatalf("install = %+v, want credentials_rejected with last error", in)
	}
	if got := e.creds(t, account); got.ClientSecret != "new" || got.Version != 2 {
		t.Errorf("a rejected install's credentials = %+v, want them kept", got)
	}
	// Unknown installs and bad ids are not errors.
	if err := e.store.MarkCredentialsRejected(testkit.Context(t), app, other, 1, "x"); err != nil {
		t.Errorf("MarkCredentialsRejected(unknown) = %v", err)
	}
	// Only a new INSTALLED ends the rejection, even with the same credentials.
	e.apply(t, installed(account, "cid", "new", t0.Add(time.Second)), store.OutcomeInstalled)
	in, _, _ = e.store.GetInstall(testkit.Context(t), app, account, 0)
	if in.Status != store.StatusInstalled || in.LastError != "" || e.raw(t, account).Version != 3 {
		t.Errorf("after a new INSTALLED: %+v version %d, want installed, no error, version 3", in, e.raw(t, account).Version)
	}
}

func TestCredentialsNeverStoredInPlainText(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const clientID, secret = "0oa1clientidplaintext", "plaintext-client-secret-value"
	for _, ev := range []store.InstallEvent{
		installed(account, clientID, secret, t0),
		installed(other, clientID, secret, t0),
		installed(other, clientID+"2", secret+"2", t0.Add(time.Second)),
	} {
		ev.JTI = "jti" // the helper's default jti quotes the client id
		e.apply(t, ev, store.OutcomeInstalled)
	}
	if err := e.store.MarkCredentialsRejected(testkit.Context(t), app, account, 1, "invalid_client"); err != nil {
		t.Fatal(err)
	}

	dump := testkit.DumpTables(t, e.pool)
	if !strings.Contains(dump, account) {
		t.Fatalf("dump does not even contain the account id; is it complete?\n%s", dump)
	}
	for _, plain := range []string{clientID, secret} {
		// bytea renders as hex, so look for the hex form too.
		for _, form := range []string{plain, fmt.Sprintf("%x", plain)} {
			if strings.Contains(dump, form) {
				t.Errorf("the database holds %q in plain text", form)
			}
		}
	}
}
