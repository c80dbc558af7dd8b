package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

func TestDuplicateDeliveryIsIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ev := installed(account, "cid-1", "secret-1", t0)
	e.apply(t, ev, store.OutcomeInstalled)
	before := e.raw(t, account)
	e.clock.Advance(time.Minute)
	e.apply(t, ev, store.OutcomeInstalled)
	after := e.raw(t, account)

	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("a duplicate delivery changed the row (-before +after):\n%s", diff)
	}
	if after.Version != 1 {
		t.Errorf("version = %d, want 1", after.Version)
	}
	if n := e.count(t, "SELECT count(*) FROM installs"); n != 1 {
		t.Errorf("%d installs rows, want 1", n)
	}
	if n := e.count(t, "SELECT count(*) FROM install_events WHERE outcome = $1", store.OutcomeInstalled); n != 2 {
		t.Errorf("%d logged events, want 2", n)
	}
	want := store.Credentials{IrisAppID: app, AccountID: account, Status: store.StatusInstalled,
		ClientID: "cid-1", ClientSecret: "secret-1", Version: 1}
	if diff := cmp.Diff(want, e.creds(t, account)); diff != "" {
		t.Errorf("credentials (-want +got):\n%s", diff)
	}
}

func TestNewCredentialsReplaceOld(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply(t, installed(account, "cid-1", "secret-1", t0), store.OutcomeInstalled)
	e.apply(t, installed(account, "cid-1", "secret-2", t0.Add(time.Second)), store.OutcomeInstalled)
	want := store.Credentials{IrisAppID: app, AccountID: account, Status: store.StatusInstalled,
		ClientID: "cid-1", ClientSecret: "secret-2", Version: 2}
	if diff := cmp.Diff(want, e.creds(t, account)); diff != "" {
		t.Errorf("credentials (-want +got):\n%s", diff)
	}
	// A changed client id alone is new credentials too.
	e.apply(t, installed(account, "cid-2", "secret-2", t0.Add(2*time.Second)), store.OutcomeInstalled)
	if got := e.creds(t, account); got.ClientID != "cid-2" || got.Version != 3 {
		t.Errorf("after a new client id: client id %q version %d, want cid-2 and 3", got.ClientID.Reveal(), got.Version)
	}
}

func TestUninstalledErasesCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply(t, installed(account, "cid-1", "secret-1", t0), store.OutcomeInstalled)
	e.apply(t, uninstalled(account, t0.Add(time.Second)), store.OutcomeUninstalled)

	r := e.raw(t, account)
	if r.Status != "uninstalled" || r.KeyID != nil || r.ClientIDEnc != nil || r.ClientSecretEnc != nil || r.Version != 2 {
		t.Errorf("row after UNINSTALLED = %+v, want status uninstalled, NULL key id and ciphertexts, version 2", r)
	}
	want := store.Credentials{IrisAppID: app, AccountID: account, Status: store.StatusUninstalled, Version: 2}
	if diff := cmp.Diff(want, e.creds(t, account)); diff != "" {
		t.Errorf("credentials (-want +got):\n%s", diff)
	}
	in, _, err := e.store.GetInstall(testkit.Context(t), app, account, 0)
	if err != nil {
		t.Fatal(err)
	}
	if in.UninstalledAt == nil || !in.UninstalledAt.Equal(t0.Add(time.Second)) {
		t.Errorf("UninstalledAt = %v, want the event time", in.UninstalledAt)
	}
	// A repeated UNINSTALLED changes nothing.
	e.apply(t, uninstalled(account, t0.Add(time.Second)), store.OutcomeUninstalled)
	if v := e.raw(t, account).Version; v != 2 {
		t.Errorf("version after a repeated UNINSTALLED = %d, want 2", v)
	}
	// Reinstalling brings credentials back and a new installed_at.
	e.apply(t, installed(account, "cid-3", "secret-3", t0.Add(time.Hour)), store.OutcomeInstalled)
	got := e.creds(t, account)
	if got.Status != store.StatusInstalled || got.ClientSecret != "secret-3" || got.Version != 3 {
		t.Errorf("after reinstall: %+v (secret %q)", got, got.ClientSecret.Reveal())
	}
	in, _, _ = e.store.GetInstall(testkit.Context(t), app, account, 0)
	if !in.InstalledAt.Equal(t0.Add(time.Hour)) || in.UninstalledAt != nil {
		t.Errorf("after reinstall InstalledAt = %v UninstalledAt = %v, want %v and nil", in.InstalledAt, in.UninstalledAt, t0.Add(time.Hour))
	}
}

// TestUninstallOfUnknownInstall: the row is created as uninstalled, so a
// delayed older INSTALLED cannot resurrect the install.
func TestUninstallOfUnknownInstall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply(t, uninstalled(account, t0), store.OutcomeUninstalled)
	in, _, err := e.store.GetInstall(testkit.Context(t), app, account, 0)
	if err != nil {
		t.Fatalf("GetInstall: %v", err)
	}
	if in.Status != store.StatusUninstalled || !in.InstalledAt.IsZero() || in.KeyID != "" {
		t.Errorf("install = %+v, want uninstalled, never installed, no key", in)
	}
	e.apply(t, installed(account, "cid", "secret", t0.Add(-time.Minute)), store.OutcomeStale)
	if got := e.creds(t, account); got.Status != store.StatusUninstalled || !got.ClientSecret.IsZero() {
		t.Errorf("a stale INSTALLED changed the install: %+v", got)
	}
	e.apply(t, installed(account, "cid", "secret", t0.Add(time.Minute)), store.OutcomeInstalled)
	if got := e.creds(t, account); got.Status != store.StatusInstalled || got.ClientSecret != "secret" {
		t.Errorf("a newer INSTALLED did not install: %+v", got)
	}
}

func TestUnknownTypeIsIgnored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply(t, installed(account, "cid-1", "secret-1", t0), store.OutcomeInstalled)
	before := e.raw(t, account)
	for _, typ := range []string{"UPDATED", "installed", "", strings.Repeat("X", 500) + "\x00\xff"} {
		ev := installed(account, "cid-2", "secret-2", t0.Add(time.Hour))
		ev.Type = typ
		e.apply(t, ev, store.OutcomeIgnored)
	}
	// An ignored event for an install never seen is logged, not created.
	ev := uninstalled(other, t0)
	ev.Type = "SUSPENDED"
	e.apply(t, ev, store.OutcomeIgnored)

	if diff := cmp.Diff(before, e.raw(t, account)); diff != "" {
		t.Errorf("ignored events changed the row (-before +after):\n%s", diff)
	}
	if n := e.count(t, "SELECT count(*) FROM installs WHERE account_id = $1", other); n != 0 {
		t.Errorf("an ignored event created an install")
	}
	if n := e.count(t, "SELECT count(*) FROM install_events WHERE outcome = 'ignored'"); n != 5 {
		t.Errorf("%d ignored events logged, want 5", n)
	}
	if n := e.count(t, "SELECT max(octet_length(type)) FROM install_events"); n > 64 {
		t.Errorf("event type stored with %d bytes, want at most 64", n)
	}
}

func TestOlderEventIsStale(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply(t, installed(account, "cid-1", "secret-1", t0), store.OutcomeInstalled)
	before := e.raw(t, account)
	e.apply(t, installed(account, "cid-2", "secret-2", t0.Add(-time.Second)), store.OutcomeStale)
	e.apply(t, uninstalled(account, t0.Add(-time.Microsecond)), store.OutcomeStale)
	if diff := cmp.Diff(before, e.raw(t, account)); diff != "" {
		t.Errorf("stale events changed the row (-before +after):\n%s", diff)
	}
	// Equal time is not stale: duplicate deliveries share an iat.
	e.apply(t, uninstalled(account, t0), store.OutcomeUninstalled)
	if got := e.creds(t, account).Status; got != store.StatusUninstalled {
		t.Errorf("status = %q after an UNINSTALLED with the same time, want uninstalled", got)
	}
	// A later repeat moves last_event_at, so an event between the two is
	// now stale.
	e.apply(t, uninstalled(account, t0.Add(time.Hour)), store.OutcomeUninstalled)
	e.apply(t, installed(account, "cid-1", "secret-1", t0.Add(time.Minute)), store.OutcomeStale)
}

func TestEventTimeDefaultsToReceiptTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ev := installed(account, "c", "s", time.Time{})
	ev.ReceivedAt = time.Time{}
	e.apply(t, ev, store.OutcomeInstalled)
	if got := e.raw(t, account).LastEventAt; !got.Equal(t0) {
		t.Errorf("last_event_at = %v, want the clock's %v", got, t0)
	}
}

func TestEveryEventIsLogged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply(t, installed(account, "cid-1", "secret-1", t0), store.OutcomeInstalled)
	e.apply(t, installed(account, "cid-1", "secret-1", t0), store.OutcomeInstalled)
	e.apply(t, installed(account, "cid-2", "secret-2", t0.Add(-time.Hour)), store.OutcomeStale)
	odd := uninstalled(account, t0)
	odd.Type, odd.JTI, odd.RemoteAddr = "PAUSED", "", ""
	e.apply(t, odd, store.OutcomeIgnored)
	e.apply(t, uninstalled(account, t0.Add(time.Hour)), store.OutcomeUninstalled)

	_, events, err := e.store.GetInstall(testkit.Context(t), app, account, 50)
	if err != nil {
		t.Fatal(err)
	}
	type logged struct{ Type, Outcome, JTI, RemoteAddr string }
	var got []logged
	for _, ev := range events {
		got = append(got, logged{ev.Type, ev.Outcome, ev.JTI, ev.RemoteAddr})
	}
	want := []logged{ // newest first
		{"UNINSTALLED", "uninstalled", "jti-uninstall", "203.0.113.7"},
		{"PAUSED", "ignored", "", ""},
		{"INSTALLED", "stale", "jti-cid-2", "203.0.113.7"},
		{"INSTALLED", "installed", "jti-cid-1", "203.0.113.7"},
		{"INSTALLED", "installed", "jti-cid-1", "203.0.113.7"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("event log (-want +got):\n%s", diff)
	}
	if !events[2].EventAt.Equal(t0.Add(-time.Hour)) || !events[2].ReceivedAt.Equal(t0.Add(-time.Hour+time.Second)) {
		t.Errorf("stale event times = %v / %v", events[2].EventAt, events[2].ReceivedAt)
	}
}

func TestApplyInstallEventRejectsBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	noSecret := installed(account, "cid", "", t0)
	badAccount := installed("not-a-uuid", "cid", "s", t0)
	noApp := installed(account, "cid", "s", t0)
	noApp.IrisAppID = ""
	longApp := installed(account, "cid", "s", t0)
	longApp.IrisAppID = strings.Repeat("a", 256)
	for name, ev := range map[string]store.InstallEvent{
		"INSTALLED without secret": noSecret, "account not a UUID": badAccount,
		"empty app id": noApp, "app id too long": longApp,
	} {
		if _, err := e.store.ApplyInstallEvent(testkit.Context(t), ev); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: error = %v, want ErrInvalid", name, err)
		}
	}
	if n := e.count(t, "SELECT count(*) FROM install_events"); n != 0 {
		t.Errorf("invalid events were logged: %d", n)
	}
}

// TestAccountIDIsCanonical: an upper-case account id names the same install
// and its credentials still open (the associated data uses one form).
func TestAccountIDIsCanonical(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.apply(t, installed(strings.ToUpper(account), "cid", "secret", t0), store.OutcomeInstalled)
	if got := e.creds(t, account); got.ClientSecret != "secret" || got.AccountID != account {
		t.Errorf("credentials by lower-case id = %+v", got)
	}
	if got := e.creds(t, strings.ToUpper(account)); got.ClientSecret != "secret" {
		t.Errorf("credentials by upper-case id = %+v", got)
	}
}

func TestInstallCredentialsNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, acct := range []string{account, "nope"} {
		if _, err := e.store.InstallCredentials(testkit.Context(t), app, acct); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("InstallCredentials(%q) error = %v, want ErrNotFound", acct, err)
		}
	}
}
