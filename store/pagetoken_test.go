package store_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

func TestPageTokens(t *testing.T) {
	e := newEnv(t)
	key := store.InstallKey{IrisAppID: "@a/one", AccountID: acct(3)}
	tok := e.store.PageToken(key, "@a/one", store.StatusInstalled)

	got, err := e.store.ParsePageToken(tok, "@a/one", store.StatusInstalled)
	if err != nil || got != key {
		t.Fatalf("round trip: %v %v", got, err)
	}
	// Another replica (same primary key, its own Store) accepts it.
	other := store.New(e.pool, testkit.Keyring(t, "k1:"+testkit.Key(1)))
	if _, err := other.ParsePageToken(tok, "@a/one", store.StatusInstalled); err != nil {
		t.Errorf("another store with the same primary: %v", err)
	}

	body, mac, _ := strings.Cut(tok, ".")
	otherKey := store.New(e.pool, testkit.Keyring(t, "k2:"+testkit.Key(2))).PageToken(store.InstallKey{IrisAppID: "@a/one", AccountID: acct(1)}, "@a/one", store.StatusInstalled)
	otherBody, _, _ := strings.Cut(otherKey, ".")
	for name, c := range map[string]struct {
		tok, app string
		status   store.InstallStatus
	}{
		"other app filter":       {tok, "@b/two", store.StatusInstalled},
		"other status filter":    {tok, "@a/one", ""},
		"moved cursor, old MAC":  {otherBody + "." + mac, "@a/one", store.StatusInstalled},
		"made under another key": {otherKey, "@a/one", store.StatusInstalled},
		"no MAC":                 {body, "@a/one", store.StatusInstalled},
		"truncated MAC":          {tok[:len(tok)-3], "@a/one", store.StatusInstalled},
		"garbage":                {"!!!.???", "@a/one", store.StatusInstalled},
		"over-long":              {strings.Repeat("A", 2000) + "." + mac, "@a/one", store.StatusInstalled},
	} {
		if _, err := e.store.ParsePageToken(c.tok, c.app, c.status); !errors.Is(err, store.ErrBadPageToken) || !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrBadPageToken", name, err)
		}
	}
}

// Text Postgres would refuse is the caller's fault, not a database failure.
func TestListInstallsRefusesBadFilterBytes(t *testing.T) {
	e := newEnv(t)
	for _, app := range []string{"@a/o\x00ne", "@a/\xffone"} {
		_, err := e.store.ListInstalls(testkit.Context(t), store.ListFilter{IrisAppID: app})
		if !errors.Is(err, store.ErrInvalid) || store.IsDatabaseFailure(err) {
			t.Errorf("filter %q: err = %v, want ErrInvalid", app, err)
		}
	}
}
