package store_test

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

func newUser(name string) store.NewAPIUser {
	return store.NewAPIUser{Name: name, Username: name + "@api.example",
		Password: crypto.Secret("pw-" + name + "-x9"), ClientID: crypto.Secret("0oa-" + name),
		ClientSecret: crypto.Secret("cs-" + name + "-Q7")}
}

func (e *env) createUser(t testing.TB, u store.NewAPIUser) store.APIUser {
	t.Helper()
	got, err := e.store.CreateAPIUser(testkit.Context(t), u)
	if err != nil {
		t.Fatalf("CreateAPIUser(%s): %v", u.Name, err)
	}
	return got
}

// setTokens commits tokens for a user as a refresh would.
func (e *env) setTokens(t testing.TB, name string, tok store.APIUserTokens) store.APIUserToken {
	t.Helper()
	v, err := e.store.UpdateAPIUserLocked(testkit.Context(t), name, func(store.APIUserState) (store.APIUserUpdate, error) {
		return store.APIUserUpdate{Tokens: &tok}, nil
	})
	if err != nil {
		t.Fatalf("UpdateAPIUserLocked: %v", err)
	}
	return v
}

func TestAPIUserCreateListReplaceDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := newUser("reports")
	v := newUser("alpha")
	v.Scopes = []string{"api", "api", "offline_access", "extra.scope"}
	want := []store.APIUser{
		{Name: "alpha", Username: "alpha@api.example", Scopes: []string{"api", "offline_access", "extra.scope"},
			Status: store.APIUserActive, CreatedAt: t0, UpdatedAt: t0},
		{Name: "reports", Username: "reports@api.example", Scopes: []string{"api", "offline_access"},
			Status: store.APIUserActive, CreatedAt: t0, UpdatedAt: t0},
	}
	if diff := cmp.Diff(want[1], e.createUser(t, u)); diff != "" {
		t.Errorf("CreateAPIUser (-want +got):\n%s", diff)
	}
	e.createUser(t, v)
	got, err := e.store.ListAPIUsers(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListAPIUsers (-want +got):\n%s", diff)
	}

	// Tokens, then a rejection, then a replacement that clears both.
	e.clock.Advance(time.Minute)
	e.setTokens(t, u.Name, store.APIUserTokens{AccessToken: "at-1", RefreshToken: "rt-1", TokenType: "Bearer",
		Scopes: []string{"api"}, ExpiresAt: e.clock.Now().Add(time.Hour)})
	if _, err := e.store.UpdateAPIUserLocked(testkit.Context(t), u.Name, func(store.APIUserState) (store.APIUserUpdate, error) {
		return store.APIUserUpdate{Reject: true, LastError: "invalid_grant"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	u.Username, u.Password, u.Scopes = "renamed@api.example", "pw-new", []string{"api"}
	replaced := e.createUser(t, u)
	tokenAt := t0.Add(time.Minute)
	wantReplaced := store.APIUser{Name: "reports", Username: "renamed@api.example", Scopes: []string{"api"},
		Status: store.APIUserActive, CreatedAt: t0, UpdatedAt: t0.Add(2 * time.Minute), LastTokenAt: &tokenAt}
	if diff := cmp.Diff(wantReplaced, replaced); diff != "" {
		t.Errorf("replacing CreateAPIUser (-want +got):\n%s", diff)
	}
	if tok, err := e.store.APIUserToken(testkit.Context(t), u.Name); err != nil || !tok.AccessToken.IsZero() || tok.Status != store.APIUserActive {
		t.Errorf("after replacing: token %v, status %q, %v; want none and active", !tok.AccessToken.IsZero(), tok.Status, err)
	}
	state := e.lockedState(t, u.Name)
	if state.Password != "pw-new" || !state.RefreshToken.IsZero() {
		t.Error("replacing did not store the new password or kept the old refresh token")
	}

	if err := e.store.DeleteAPIUser(testkit.Context(t), "alpha"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"alpha", "never-was", "bad name"} {
		err := e.store.DeleteAPIUser(testkit.Context(t), name)
		if !errors.Is(err, store.ErrAPIUserNotFound) || !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteAPIUser(%q): %v, want ErrAPIUserNotFound", name, err)
		}
		if _, err := e.store.APIUserToken(testkit.Context(t), name); !errors.Is(err, store.ErrAPIUserNotFound) {
			t.Errorf("APIUserToken(%q): %v, want ErrAPIUserNotFound", name, err)
		}
	}
	if n := e.count(t, "SELECT count(*) FROM api_users"); n != 1 {
		t.Errorf("%d API users stored, want 1", n)
	}
}

func (e *env) lockedState(t testing.TB, name string) store.APIUserState {
	t.Helper()
	var st store.APIUserState
	if _, err := e.store.UpdateAPIUserLocked(testkit.Context(t), name, func(s store.APIUserState) (store.APIUserUpdate, error) {
		st = s
		return store.APIUserUpdate{}, nil
	}); err != nil {
		t.Fatalf("UpdateAPIUserLocked(%s): %v", name, err)
	}
	return st
}

func TestAPIUserValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	long := strings.Repeat("s", 4097)
	for _, tc := range []struct {
		name string
		mod  func(*store.NewAPIUser)
		want string
	}{
		{"empty name", func(u *store.NewAPIUser) { u.Name = "" }, "name must be"},
		{"name with space", func(u *store.NewAPIUser) { u.Name = "a b" }, "name must be"},
		{"name too long", func(u *store.NewAPIUser) { u.Name = strings.Repeat("n", 129) }, "name must be"},
		{"name starting with a dot", func(u *store.NewAPIUser) { u.Name = ".hidden" }, "name must be"},
		{"no username", func(u *store.NewAPIUser) { u.Username = "" }, "username is required"},
		{"username with a newline", func(u *store.NewAPIUser) { u.Username = "a\nb" }, "username is required"},
		{"no password", func(u *store.NewAPIUser) { u.Password = "" }, "password is required"},
		{"no client id", func(u *store.NewAPIUser) { u.ClientID = "" }, "clientId is required"},
		{"client secret too long", func(u *store.NewAPIUser) { u.ClientSecret = crypto.Secret(long) }, "clientSecret is required"},
		{"password with NUL", func(u *store.NewAPIUser) { u.Password = "a\x00b" }, "password is required"},
		{"scope with a space", func(u *store.NewAPIUser) { u.Scopes = []string{"api offline_access"} }, "scopes must be"},
		{"empty scope", func(u *store.NewAPIUser) { u.Scopes = []string{""} }, "scopes must be"},
		{"everything", func(u *store.NewAPIUser) { *u = store.NewAPIUser{} }, "name must be"},
	} {
		u := newUser("valid-name")
		tc.mod(&u)
		_, err := e.store.CreateAPIUser(testkit.Context(t), u)
		var ve *store.ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, store.ErrInvalid) || !strings.Contains(ve.Message, tc.want) {
			t.Errorf("%s: %v, want a ValidationError about %q", tc.name, err, tc.want)
			continue
		}
		if verr := u.Validate(); verr == nil || verr.Error() != err.Error() {
			t.Errorf("%s: Validate() = %v, want %v", tc.name, verr, err)
		}
		for _, s := range []crypto.Secret{u.Password, u.ClientID, u.ClientSecret} {
			if s != "" && len(s) < 100 && strings.Contains(err.Error(), s.Reveal()) {
				t.Errorf("%s: the error quotes a secret: %v", tc.name, err)
			}
		}
	}
	if n := e.count(t, "SELECT count(*) FROM api_users"); n != 0 {
		t.Errorf("%d invalid API users stored", n)
	}
	if err := newUser("ok.name_1@x-y").Validate(); err != nil {
		t.Errorf("a valid registration: %v", err)
	}
}

func TestAPIUserLockedUpdates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := newUser("ops")
	e.createUser(t, u)
	st := e.lockedState(t, u.Name)
	wantState := store.APIUserState{
		APIUserToken: store.APIUserToken{Name: "ops", Status: store.APIUserActive},
		Username:     "ops@api.example", Password: u.Password, ClientID: u.ClientID, ClientSecret: u.ClientSecret,
		RequestScopes: []string{"api", "offline_access"},
	}
	if diff := cmp.Diff(wantState, st, cmpopts.IgnoreUnexported(store.APIUserState{})); diff != "" {
		t.Errorf("locked state of a new user (-want +got):\n%s", diff)
	}

	exp := t0.Add(time.Hour)
	tok := store.APIUserTokens{AccessToken: "at-1", RefreshToken: "rt-1", TokenType: "Bearer", Scopes: []string{"api", "offline_access"}, ExpiresAt: exp}
	wantView := store.APIUserToken{Name: "ops", Status: store.APIUserActive, AccessToken: "at-1", TokenType: "Bearer",
		Scopes: []string{"api", "offline_access"}, ExpiresAt: exp, ObtainedAt: t0}
	if diff := cmp.Diff(wantView, e.setTokens(t, u.Name, tok)); diff != "" {
		t.Errorf("committed token (-want +got):\n%s", diff)
	}
	if got, err := e.store.APIUserToken(testkit.Context(t), u.Name); err != nil || !cmp.Equal(wantView, got) {
		t.Errorf("APIUserToken = %v, %v; want %v", got, err, wantView)
	}
	if st := e.lockedState(t, u.Name); st.RefreshToken != "rt-1" {
		t.Error("the refresh token was not stored")
	}

	// fn failing writes nothing: a crash between Trackunit's answer and the commit.
	_, err := e.store.UpdateAPIUserLocked(testkit.Context(t), u.Name, func(store.APIUserState) (store.APIUserUpdate, error) {
		return store.APIUserUpdate{Tokens: &store.APIUserTokens{AccessToken: "at-2", RefreshToken: "rt-2", ExpiresAt: exp}}, errors.New("killed")
	})
	if err == nil || err.Error() != "killed" {
		t.Errorf("UpdateAPIUserLocked with a failing fn: %v", err)
	}
	if st := e.lockedState(t, u.Name); st.RefreshToken != "rt-1" || st.AccessToken != "at-1" {
		t.Error("a failed fn changed the stored tokens")
	}

	// A refused refresh token is dropped; the access token and its key stay.
	if _, err := e.store.UpdateAPIUserLocked(testkit.Context(t), u.Name, func(store.APIUserState) (store.APIUserUpdate, error) {
		return store.APIUserUpdate{DropRefreshToken: true, LastError: "server_error"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if st := e.lockedState(t, u.Name); !st.RefreshToken.IsZero() || st.AccessToken != "at-1" {
		t.Error("DropRefreshToken did not drop only the refresh token")
	}
	if got := e.listedUser(t, u.Name); got.LastError != "server_error" || got.LastTokenAt == nil || !got.LastTokenAt.Equal(t0) {
		t.Errorf("listed: last error %q, last token at %v", got.LastError, got.LastTokenAt)
	}

	// Tokens without a refresh token (no offline_access) store none.
	tok.RefreshToken, tok.AccessToken, tok.Scopes = "", "at-3", nil
	e.setTokens(t, u.Name, tok)
	if st := e.lockedState(t, u.Name); !st.RefreshToken.IsZero() || st.AccessToken != "at-3" || st.Scopes == nil {
		t.Errorf("tokens without a refresh token: refresh %v, access %v, scopes %v", !st.RefreshToken.IsZero(), st.AccessToken == "at-3", st.Scopes)
	}

	if _, err := e.store.UpdateAPIUserLocked(testkit.Context(t), u.Name, func(store.APIUserState) (store.APIUserUpdate, error) {
		return store.APIUserUpdate{Reject: true, LastError: "invalid_client"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if st := e.lockedState(t, u.Name); st.Status != store.APIUserCredentialsRejected || !st.AccessToken.IsZero() {
		t.Errorf("after Reject: status %q, access token kept: %v", st.Status, !st.AccessToken.IsZero())
	}
	if n := e.count(t, "SELECT count(*) FROM api_users WHERE token_key_id IS NULL AND last_error = 'invalid_client'"); n != 1 {
		t.Error("Reject left a token key id or no last error")
	}
	if _, err := e.store.UpdateAPIUserLocked(testkit.Context(t), "nobody", func(store.APIUserState) (store.APIUserUpdate, error) {
		t.Error("fn called for an unknown user")
		return store.APIUserUpdate{}, nil
	}); !errors.Is(err, store.ErrAPIUserNotFound) {
		t.Errorf("UpdateAPIUserLocked(unknown): %v", err)
	}
}

func (e *env) listedUser(t testing.TB, name string) store.APIUser {
	t.Helper()
	users, err := e.store.ListAPIUsers(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if u.Name == name {
			return u
		}
	}
	t.Fatalf("%s not listed", name)
	return store.APIUser{}
}

// A second UpdateAPIUserLocked for the same user waits for the first to
// commit and then sees what it wrote.
func TestAPIUserLockSerializes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createUser(t, newUser("serial"))
	other := store.New(e.pool, e.keys, store.WithClock(e.clock.Now)) // another replica
	holding, release := make(chan struct{}), make(chan struct{})
	firstDone := make(chan error, 1)
	go func() {
		_, err := e.store.UpdateAPIUserLocked(testkit.Context(t), "serial", func(store.APIUserState) (store.APIUserUpdate, error) {
			close(holding)
			<-release
			return store.APIUserUpdate{Tokens: &store.APIUserTokens{AccessToken: "from-first", RefreshToken: "rt-first",
				TokenType: "Bearer", ExpiresAt: t0.Add(time.Hour)}}, nil
		})
		firstDone <- err
	}()
	<-holding
	secondSaw := make(chan string, 1)
	secondDone := make(chan error, 1)
	go func() {
		_, err := other.UpdateAPIUserLocked(testkit.Context(t), "serial", func(st store.APIUserState) (store.APIUserUpdate, error) {
			secondSaw <- st.AccessToken.Reveal()
			return store.APIUserUpdate{}, nil
		})
		secondDone <- err
	}()
	// Wait until the second is blocked on the row lock, then check it has
	// not run.
	testkit.WaitFor(t, "the second update to wait for the row lock", func() bool {
		return e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) > 0
	})
	select {
	case <-secondSaw:
		t.Fatal("the second update ran while the first held the lock")
	default:
	}
	close(release)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	if got := <-secondSaw; got != "from-first" {
		t.Errorf("the second update saw %q, want the first one's committed token", got)
	}
	if err := <-secondDone; err != nil {
		t.Fatal(err)
	}
}

// Ciphertexts moved to another column or row fail to open, as errors.
func TestAPIUserTamperedCiphertexts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, sql string
		read      func(t *testing.T, e *env) error
	}{
		{"password in the client secret column", `UPDATE api_users SET client_secret_enc = password_enc WHERE name = 'a'`,
			func(t *testing.T, e *env) error {
				_, err := e.store.UpdateAPIUserLocked(testkit.Context(t), "a", noUpdate)
				return err
			}},
		{"access token of another user", `UPDATE api_users SET access_token_enc = (SELECT access_token_enc FROM api_users WHERE name = 'b') WHERE name = 'a'`,
			func(t *testing.T, e *env) error { _, err := e.store.APIUserToken(testkit.Context(t), "a"); return err }},
		{"refresh token in the access token column", `UPDATE api_users SET access_token_enc = refresh_token_enc WHERE name = 'a'`,
			func(t *testing.T, e *env) error { _, err := e.store.APIUserToken(testkit.Context(t), "a"); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			for _, name := range []string{"a", "b"} {
				e.createUser(t, newUser(name))
				e.setTokens(t, name, store.APIUserTokens{AccessToken: crypto.Secret("at-" + name), RefreshToken: crypto.Secret("rt-" + name),
					TokenType: "Bearer", Scopes: []string{"api"}, ExpiresAt: t0.Add(time.Hour)})
			}
			if _, err := e.pool.Exec(testkit.Context(t), tc.sql); err != nil {
				t.Fatal(err)
			}
			if err := tc.read(t, e); !errors.Is(err, store.ErrUndecryptable) || !errors.Is(err, crypto.ErrDecrypt) {
				t.Errorf("reading a moved ciphertext: %v, want ErrUndecryptable", err)
			}
		})
	}
}

func noUpdate(store.APIUserState) (store.APIUserUpdate, error) { return store.APIUserUpdate{}, nil }

// KeyIDCounts counts API users' credentials and tokens per key id, so the
// start-up check sees them.
func TestKeyIDCountsIncludesAPIUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // primary k1
	e.apply(t, installed(account, "cid-a", "secret-a", t0), store.OutcomeInstalled)
	e.createUser(t, newUser("one"))
	e.setTokens(t, "one", store.APIUserTokens{AccessToken: "at", RefreshToken: "rt", TokenType: "Bearer", ExpiresAt: t0.Add(time.Hour)})
	counts := func(s *store.Store) map[string]int64 {
		t.Helper()
		c, err := s.KeyIDCounts(testkit.Context(t))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if diff := cmp.Diff(map[string]int64{"k1": 3}, counts(e.store)); diff != "" {
		t.Errorf("KeyIDCounts (-want +got):\n%s", diff)
	}
	rotated := store.New(e.pool, testkit.Keyring(t, "k2:"+testkit.Key(2)+",k1:"+testkit.Key(1)), store.WithClock(e.clock.Now))
	if _, err := rotated.CreateAPIUser(testkit.Context(t), newUser("two")); err != nil {
		t.Fatal(err)
	}
	if _, err := rotated.UpdateAPIUserLocked(testkit.Context(t), "one", func(store.APIUserState) (store.APIUserUpdate, error) {
		return store.APIUserUpdate{Tokens: &store.APIUserTokens{AccessToken: "at2", RefreshToken: "rt2", TokenType: "Bearer", ExpiresAt: t0.Add(time.Hour)}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int64{"k1": 2, "k2": 2}, counts(rotated)); diff != "" {
		t.Errorf("KeyIDCounts after rotation (-want +got):\n%s", diff)
	}
}

// Nothing secret is stored in plain text: every table, as text and hex.
func TestAPIUserNothingStoredInPlainText(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := newUser("plain")
	e.createUser(t, u)
	tok := store.APIUserTokens{AccessToken: "eyJ.access-token-Z9.sig", RefreshToken: "refresh-token-Y8", TokenType: "Bearer", ExpiresAt: t0.Add(time.Hour)}
	e.setTokens(t, u.Name, tok)
	dump := testkit.DumpTables(t, e.pool)
	if !strings.Contains(dump, "plain@api.example") {
		t.Fatal("the dump does not even hold the user")
	}
	for _, s := range []crypto.Secret{u.Password, u.ClientID, u.ClientSecret, tok.AccessToken, tok.RefreshToken} {
		if strings.Contains(dump, s.Reveal()) || strings.Contains(dump, hex.EncodeToString([]byte(s.Reveal()))) {
			t.Errorf("a secret of %d bytes is stored in plain text", len(s))
		}
	}
	if p := fmt.Sprintf("%v %+v", e.lockedState(t, u.Name), u); strings.Contains(p, "pw-plain") || strings.Contains(p, "refresh-token-Y8") {
		t.Error("printing an APIUserState or NewAPIUser shows a secret")
	}
}
