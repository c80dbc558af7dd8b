package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

const keysTestApp = "@acme/keys-test"

func keysTestEntry(t *testing.T, id string) string {
	t.Helper()
	e, err := crypto.GenerateKey(id)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func keysTestAccount(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }

// keysTestSeed stores one install per keyring, each sealed under that
// keyring's primary.
func keysTestSeed(t *testing.T, dbURL string, keyrings ...*crypto.Keyring) {
	t.Helper()
	ctx := testkit.Context(t)
	pool, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for i, k := range keyrings {
		ev := store.InstallEvent{Type: store.TypeInstalled, IrisAppID: keysTestApp, AccountID: keysTestAccount(i),
			ClientID: crypto.Secret(fmt.Sprint("cid-", i)), ClientSecret: crypto.Secret(fmt.Sprint("secret-", i))}
		if _, err := store.New(pool, k).ApplyInstallEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
}

// keysTestKeyIDs counts the installs per key id.
func keysTestKeyIDs(t *testing.T, dbURL string) map[string]int64 {
	t.Helper()
	ctx := testkit.Context(t)
	pool, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	counts, err := store.New(pool, testkit.Keyring(t, keysTestEntry(t, "any"))).KeyIDCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return counts
}

func TestKeysReencrypt(t *testing.T) {
	oldKey, newKey, goneKey := keysTestEntry(t, "old"), keysTestEntry(t, "new"), keysTestEntry(t, "gone")
	oldRing, newRing, goneRing := testkit.Keyring(t, oldKey), testkit.Keyring(t, newKey), testkit.Keyring(t, goneKey)
	const done = "done: every stored secret is under new; keys other than new may now be removed from ENCRYPTION_KEYS\n"
	tests := []struct {
		name       string
		seed       []*crypto.Keyring
		wantStdout string
		wantErr    string // in stderr; "" for success
		wantKeyIDs map[string]int64
	}{
		{
			name: "rotation",
			seed: []*crypto.Keyring{oldRing, newRing, oldRing, oldRing},
			wantStdout: "old: 3 moved, 0 skipped (changed meanwhile), 0 failed\n" +
				"total: 3 moved, 0 skipped (changed meanwhile), 0 failed in 2 batches\n" + done,
			wantKeyIDs: map[string]int64{"new": 4},
		},
		{
			name:       "nothing to do",
			seed:       []*crypto.Keyring{newRing},
			wantStdout: "total: 0 moved, 0 skipped (changed meanwhile), 0 failed in 0 batches\n" + done,
			wantKeyIDs: map[string]int64{"new": 1},
		},
		{
			name: "a key id missing from the keyring",
			seed: []*crypto.Keyring{oldRing, goneRing},
			wantStdout: "gone: 0 moved, 0 skipped (changed meanwhile), 1 failed\n" +
				"old: 1 moved, 0 skipped (changed meanwhile), 0 failed\n" +
				"failed: installs " + keysTestApp + "/" + keysTestAccount(1) + " client_id under gone: unknown key id\n" +
				"total: 1 moved, 0 skipped (changed meanwhile), 1 failed in 1 batches\n" +
				"not done: secrets remain under gone (1); keep those keys in ENCRYPTION_KEYS\n",
			wantErr:    "irisx-broker keys: 1 secrets could not be decrypted\n",
			wantKeyIDs: map[string]int64{"new": 1, "gone": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dbURL := testdb.NewDatabase(t)
			keysTestSeed(t, dbURL, tt.seed...)
			var stdout, stderr bytes.Buffer
			err := run(testkit.Context(t), []string{"irisx-broker", "keys", "reencrypt", "--batch", "2"},
				mapEnv(map[string]string{"DATABASE_URL": dbURL, "ENCRYPTION_KEYS": newKey + "," + oldKey}),
				nil, &stdout, &stderr)
			if (err != nil) != (tt.wantErr != "") {
				t.Errorf("err = %v, want error %v\nstderr:\n%s", err, tt.wantErr != "", stderr.String())
			}
			if diff := cmp.Diff(tt.wantStdout, stdout.String()); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if !strings.HasSuffix(stderr.String(), tt.wantErr) {
				t.Errorf("stderr does not end in %q:\n%s", tt.wantErr, stderr.String())
			}
			if diff := cmp.Diff(tt.wantKeyIDs, keysTestKeyIDs(t, dbURL)); diff != "" {
				t.Errorf("installs per key id (-want +got):\n%s", diff)
			}
			for _, secret := range []string{"secret-", "cid-", strings.Split(newKey, ":")[1]} {
				if strings.Contains(stdout.String()+stderr.String(), secret) {
					t.Errorf("output contains %q", secret)
				}
			}
		})
	}
}

// An interrupt before the end stops the run, says how to continue, and
// fails; nothing is half-written.
func TestKeysReencryptInterrupted(t *testing.T) {
	oldKey, newKey := keysTestEntry(t, "old"), keysTestEntry(t, "new")
	dbURL := testdb.NewDatabase(t)
	keysTestSeed(t, dbURL, testkit.Keyring(t, oldKey), testkit.Keyring(t, oldKey))
	ctx, cancel := context.WithCancel(testkit.Context(t))
	cancel() // Ctrl-C already pressed
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"irisx-broker", "keys", "reencrypt"},
		mapEnv(map[string]string{"DATABASE_URL": dbURL, "ENCRYPTION_KEYS": newKey + "," + oldKey}), nil, &stdout, &stderr)
	if err == nil {
		t.Error("an interrupted run succeeded")
	}
	if !strings.Contains(stdout.String(), "run `irisx-broker keys reencrypt` again to continue") {
		t.Errorf("stdout does not say how to continue:\n%s", stdout.String())
	}
	if diff := cmp.Diff(map[string]int64{"old": 2}, keysTestKeyIDs(t, dbURL)); diff != "" {
		t.Errorf("installs per key id (-want +got):\n%s", diff)
	}
}

// `keys reencrypt` needs only DATABASE_URL and the keys, and reports a bad
// value as serve does, naming the variable and never its value.
func TestKeysReencryptBadInput(t *testing.T) {
	good := keysTestEntry(t, "k1")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    []string // in stderr
		notWant []string
	}{
		{
			name: "bad ENCRYPTION_KEYS",
			env:  map[string]string{"DATABASE_URL": "postgres://127.0.0.1:1/x", "ENCRYPTION_KEYS": "k1:dG9vLXNob3J0"},
			want: []string{"invalid configuration", `ENCRYPTION_KEYS: crypto: invalid keyring: entry 1 (id "k1"): key is 9 bytes, want 32`},
			// No API tokens are needed, so none are asked for.
			notWant: []string{"dG9vLXNob3J0", "INTERNAL_API_TOKENS", "ADMIN_API_TOKENS", "DATABASE_URL"},
		},
		{
			name:    "nothing set",
			env:     map[string]string{},
			want:    []string{"DATABASE_URL: required", "ENCRYPTION_KEYS: required"},
			notWant: []string{"INTERNAL_API_TOKENS"},
		},
		{
			name:    "bad DATABASE_URL",
			env:     map[string]string{"DATABASE_URL": "mysql://root:hunter2@db/x", "ENCRYPTION_KEYS": good},
			want:    []string{"DATABASE_URL: must be a postgres:// or postgresql:// URL"},
			notWant: []string{"hunter2", "ENCRYPTION_KEYS"},
		},
		{
			name: "bad batch size",
			args: []string{"--batch", "0"},
			env:  map[string]string{"DATABASE_URL": "postgres://127.0.0.1:1/x", "ENCRYPTION_KEYS": good},
			want: []string{"--batch must be between 1 and 10000"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(testkit.Context(t), append([]string{"irisx-broker", "keys", "reencrypt"}, tt.args...),
				mapEnv(tt.env), nil, &stdout, &stderr)
			if err == nil {
				t.Fatal("keys reencrypt succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr.String())
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(stderr.String(), w) {
					t.Errorf("stderr contains %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// serve refuses to start while stored secrets use a key id missing from
// ENCRYPTION_KEYS, naming each id and how many installs use it.
func TestServeRefusesMissingKeyID(t *testing.T) {
	oldKey, newKey, otherKey := keysTestEntry(t, "old"), keysTestEntry(t, "new"), keysTestEntry(t, "other")
	dbURL := testdb.NewDatabase(t)
	old, other := testkit.Keyring(t, oldKey), testkit.Keyring(t, otherKey)
	keysTestSeed(t, dbURL, old, old, old, other, testkit.Keyring(t, newKey))
	var stdout, stderr bytes.Buffer
	err := run(testkit.Context(t), []string{"irisx-broker", "serve"}, mapEnv(map[string]string{
		"DATABASE_URL":        dbURL,
		"ENCRYPTION_KEYS":     newKey,
		"INTERNAL_API_TOKENS": "internal-token-0000000",
		"ADMIN_API_TOKENS":    "admin-token-00000000",
		"PUBLIC_ADDR":         "127.0.0.1:0",
		"INTERNAL_ADDR":       "127.0.0.1:0",
		// Never reached: the check comes before anything is fetched.
		"TRACKUNIT_JWKS_URL": "http://127.0.0.1:1/jwks",
		"TRACKUNIT_AUTH_URL": "http://127.0.0.1:1",
	}), nil, &stdout, &stderr)
	if err == nil {
		t.Fatal("serve started with stored secrets under key ids it lacks")
	}
	want := "ENCRYPTION_KEYS lacks key ids used by stored secrets: old (3), other (1)"
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr does not contain %q:\n%s", want, stderr.String())
	}
	if strings.Contains(stderr.String(), "listening") {
		t.Errorf("serve started listening:\n%s", stderr.String())
	}
}
