package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

func TestIdentityProfilesRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	age, life := 1500*time.Millisecond, 5*time.Minute
	in := store.IdentityProfile{
		SeenAt: t0, Verdict: store.VerdictAccepted, Alg: "RS256", Kid: "k1", Typ: "JWT",
		Iss: "https://iris.trackunit.com", Aud: []string{"irisx"}, Claims: []string{"exp", "iat", "iss"},
		ClaimCount: 3, Age: &age, Lifetime: &life, UnknownFields: []string{"extra"},
	}
	refused := store.IdentityProfile{SeenAt: t0.Add(time.Second), Verdict: store.VerdictRefused, Rule: "malformed"}
	for _, p := range []store.IdentityProfile{in, refused} {
		if err := e.store.RecordIdentityProfile(testkit.Context(t), p); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.store.ListIdentityProfiles(testkit.Context(t), store.VerdictAccepted, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d accepted profiles, want 1", len(got))
	}
	in.ID, got[0].SeenAt = got[0].ID, got[0].SeenAt.UTC()
	if diff := cmp.Diff(in, got[0]); diff != "" {
		t.Errorf("profile (-want +got):\n%s", diff)
	}
	got, err = e.store.ListIdentityProfiles(testkit.Context(t), store.VerdictRefused, 50)
	if err != nil || len(got) != 1 {
		t.Fatalf("refused: %v, %v", got, err)
	}
	// A body never read stays NULL, told apart from "no unknown fields".
	if g := got[0]; g.UnknownFields != nil || g.Age != nil || g.Aud == nil || len(g.Aud) != 0 {
		t.Errorf("refused profile = %+v, want nil unknown fields and age, empty aud", g)
	}

	err = e.store.RecordIdentityProfile(testkit.Context(t), store.IdentityProfile{Verdict: "maybe"})
	if !errors.Is(err, store.ErrInvalid) {
		t.Errorf("verdict maybe: %v, want ErrInvalid", err)
	}
	if n := e.count(t, "SELECT count(*) FROM identity_profiles"); n != 2 {
		t.Errorf("%d rows, want 2 (the invalid one not stored)", n)
	}
}

// Each verdict keeps its newest MaxIdentityProfiles rows (plus fewer than
// one prune interval's inserts), so refused tokens (anyone can send them)
// never push the accepted ones out.
func TestIdentityProfilesRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := func(verdict, kid string) {
		t.Helper()
		if err := e.store.RecordIdentityProfile(testkit.Context(t), store.IdentityProfile{Verdict: verdict, Kid: kid}); err != nil {
			t.Fatal(err)
		}
	}
	rec(store.VerdictAccepted, "the-accepted-one")
	const refused = 3 * store.MaxIdentityProfiles
	for i := range refused {
		rec(store.VerdictRefused, "r"+string(rune('a'+i%26)))
	}
	n := e.count(t, "SELECT count(*) FROM identity_profiles WHERE verdict = 'refused'")
	if n < store.MaxIdentityProfiles || n >= store.MaxIdentityProfiles+store.ProfilePruneEvery {
		t.Errorf("%d refused rows, want %d to %d", n, store.MaxIdentityProfiles, store.MaxIdentityProfiles+store.ProfilePruneEvery-1)
	}
	got, err := e.store.ListIdentityProfiles(testkit.Context(t), store.VerdictAccepted, 10)
	if err != nil || len(got) != 1 || got[0].Kid != "the-accepted-one" {
		t.Errorf("accepted after a refused flood = %v, %v", got, err)
	}
	// The kept refused rows are the newest ones, without a gap: ids 2 to
	// refused+1 were refused, in order.
	if maxID := e.count(t, "SELECT max(id) FROM identity_profiles WHERE verdict = 'refused'"); maxID != refused+1 {
		t.Errorf("newest refused id = %d, want %d", maxID, refused+1)
	}
	if minID := e.count(t, "SELECT min(id) FROM identity_profiles WHERE verdict = 'refused'"); minID != refused+2-n {
		t.Errorf("oldest kept refused id = %d, want %d (the newest %d kept)", minID, refused+2-n, n)
	}
}

func TestUnknownFieldsInEventLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ev := installed(account, "0oa-client", "s3cret", t0)
	ev.UnknownFields = []string{"newField", "zeta"}
	if _, err := e.store.ApplyInstallEvent(testkit.Context(t), ev); err != nil {
		t.Fatal(err)
	}
	plain := installed(account, "0oa-client", "s3cret", t0.Add(time.Minute))
	if _, err := e.store.ApplyInstallEvent(testkit.Context(t), plain); err != nil {
		t.Fatal(err)
	}
	_, events, err := e.store.GetInstall(testkit.Context(t), app, account, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]string
	for _, ev := range events {
		got = append(got, ev.UnknownFields)
	}
	if diff := cmp.Diff([][]string{{}, {"newField", "zeta"}}, got); diff != "" {
		t.Errorf("unknown fields, newest first (-want +got):\n%s", diff)
	}
}
