package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

// TestTamperedCiphertextsNeverDecrypt moves and alters stored ciphertexts
// behind the store's back: every case is ErrUndecryptable, never wrong or
// swapped credentials.
func TestTamperedCiphertextsNeverDecrypt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		sql     string // applied to the install `account`
		wantErr error  // besides ErrUndecryptable
	}{
		{"secret copied from another row", `UPDATE installs SET client_secret_enc =
			(SELECT client_secret_enc FROM installs WHERE account_id = '` + other + `') WHERE account_id = '` + account + `'`, crypto.ErrDecrypt},
		{"both columns copied from another row", `UPDATE installs SET (client_id_enc, client_secret_enc) =
			(SELECT client_id_enc, client_secret_enc FROM installs WHERE account_id = '` + other + `') WHERE account_id = '` + account + `'`, crypto.ErrDecrypt},
		{"columns swapped", `UPDATE installs SET client_id_enc = client_secret_enc, client_secret_enc = client_id_enc
			WHERE account_id = '` + account + `'`, crypto.ErrDecrypt},
		{"secret copied into the id column", `UPDATE installs SET client_id_enc = client_secret_enc
			WHERE account_id = '` + account + `'`, crypto.ErrDecrypt},
		{"bit flip", `UPDATE installs SET client_secret_enc =
			set_byte(client_secret_enc, 20, get_byte(client_secret_enc, 20) # 1) WHERE account_id = '` + account + `'`, crypto.ErrDecrypt},
		{"truncated", `UPDATE installs SET client_secret_enc = substring(client_secret_enc from 1 for 10)
			WHERE account_id = '` + account + `'`, crypto.ErrDecrypt},
		{"relabelled to another valid key", `UPDATE installs SET key_id = 'k0' WHERE account_id = '` + account + `'`, crypto.ErrDecrypt},
		{"relabelled to an unknown key", `UPDATE installs SET key_id = 'gone' WHERE account_id = '` + account + `'`, crypto.ErrUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.apply(t, installed(account, "cid-a", "secret-a", t0), store.OutcomeInstalled)
			e.apply(t, installed(other, "cid-b", "secret-b", t0), store.OutcomeInstalled)
			if tag, err := e.pool.Exec(testkit.Context(t), tt.sql); err != nil || tag.RowsAffected() != 1 {
				t.Fatalf("tamper: %v (%d rows)", err, tag.RowsAffected())
			}
			c, err := e.store.InstallCredentials(testkit.Context(t), app, account)
			if !errors.Is(err, store.ErrUndecryptable) || !errors.Is(err, tt.wantErr) {
				t.Errorf("InstallCredentials error = %v, want ErrUndecryptable and %v", err, tt.wantErr)
			}
			if !c.ClientID.IsZero() || !c.ClientSecret.IsZero() {
				t.Errorf("InstallCredentials returned credentials alongside the error")
			}
			// The untouched install still opens.
			if got := e.creds(t, other); got.ClientSecret != "secret-b" {
				t.Errorf("the other install's secret = %q", got.ClientSecret.Reveal())
			}
			// A fresh INSTALLED repairs it (undecryptable counts as different).
			e.apply(t, installed(account, "cid-a", "secret-a", t0), store.OutcomeInstalled)
			if got := e.creds(t, account); got.ClientSecret != "secret-a" {
				t.Errorf("after a fresh INSTALLED the secret = %q", got.ClientSecret.Reveal())
			}
		})
	}
}

// TestKeyRotation: credentials sealed under an old key keep opening once a
// new primary is in front of it; new writes use the new primary;
// KeyIDCounts reports both.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // primary k1
	e.apply(t, installed(account, "cid-a", "secret-a", t0), store.OutcomeInstalled)
	e.apply(t, installed(other, "cid-b", "secret-b", t0), store.OutcomeInstalled)

	rotated := store.New(e.pool, testkit.Keyring(t, "k2:"+testkit.Key(2)+",k1:"+testkit.Key(1)))
	if got, err := rotated.InstallCredentials(testkit.Context(t), app, account); err != nil || got.ClientSecret != "secret-a" {
		t.Fatalf("old ciphertext under the rotated keyring: %v, %v", got, err)
	}
	if _, err := rotated.ApplyInstallEvent(testkit.Context(t), installed(other, "cid-b", "secret-new", t0.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	third := "6f1c0e9a-1b2c-4d3e-8f40-000000000003"
	if _, err := rotated.ApplyInstallEvent(testkit.Context(t), uninstalled(third, t0)); err != nil {
		t.Fatal(err)
	}
	counts, err := rotated.KeyIDCounts(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int64{"k1": 1, "k2": 1}, counts); diff != "" {
		t.Errorf("KeyIDCounts (-want +got):\n%s", diff)
	}
	// A keyring without k1 cannot open what k1 sealed.
	withoutK1 := store.New(e.pool, testkit.Keyring(t, "k2:"+testkit.Key(2)))
	if _, err := withoutK1.InstallCredentials(testkit.Context(t), app, account); !errors.Is(err, crypto.ErrUnknownKey) {
		t.Errorf("InstallCredentials without its key: %v, want ErrUnknownKey", err)
	}
}
