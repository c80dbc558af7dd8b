package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"gocloud.dev/secrets/localsecrets"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

const kmsTestApp = "@irisx/kms"

func kmsTestKeyURL(t *testing.T) string {
	t.Helper()
	k, err := localsecrets.NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	return "base64key://" + base64.URLEncoding.EncodeToString(k[:])
}

// kmsRun runs one short command and returns its stdout and stderr.
func kmsRun(t *testing.T, e map[string]string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(testkit.Context(t), append([]string{"irisx-broker"}, args...), mapEnv(e), strings.NewReader(""), &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

// kmsGenerate is `keys generate --kms URL --id ID`.
func kmsGenerate(t *testing.T, kmsURL, id string) string {
	t.Helper()
	out, stderr, err := kmsRun(t, nil, "keys", "generate", "--kms", kmsURL, "--id", id)
	if err != nil {
		t.Fatalf("keys generate --kms: %v\n%s", err, stderr)
	}
	entry := strings.TrimSpace(out)
	if !regexp.MustCompile(`^` + id + `:[A-Za-z0-9+/]{45,}=*$`).MatchString(entry) {
		t.Fatalf("keys generate --kms printed %q", out)
	}
	return entry
}

// kmsServeEnv is the environment of serve against dbURL and the simulator
// at simURL, with the given keys.
func kmsServeEnv(dbURL, simURL, kmsURL, keys string) map[string]string {
	e := map[string]string{
		"DATABASE_URL":        dbURL,
		"PUBLIC_ADDR":         "127.0.0.1:0",
		"INTERNAL_ADDR":       "127.0.0.1:0",
		"ENCRYPTION_KEYS":     keys,
		"INTERNAL_API_TOKENS": "internal-token-for-tests",
		"ADMIN_API_TOKENS":    "admin-token-for-tests",
		"TRACKUNIT_JWKS_URL":  simURL + "/api/marketplace/jwks",
		"TRACKUNIT_AUTH_URL":  simURL,
		"DEFAULT_SCOPES":      "asset.view",
	}
	if kmsURL != "" {
		e["KMS_KEY_URL"] = kmsURL
	}
	return e
}

// kmsServe starts serve and returns its base URLs and a stop function.
func kmsServe(t *testing.T, e map[string]string) (public, internal string, stop func()) {
	t.Helper()
	_, stderr, result, end := started(t, []string{"irisx-broker", "serve"}, e)
	m := waitMatch(t, stderr, regexp.MustCompile(`"public_addr":"([^"]+)","internal_addr":"([^"]+)"`), result)
	public, internal = "http://"+m[1], "http://"+m[2]
	waitFor200(t, public+"/readyz")
	return public, internal, func() {
		end()
		if err := <-result; err != nil {
			t.Errorf("serve ended with %v", err)
		}
		result <- nil
	}
}

func kmsGetToken(t *testing.T, internal, account string) string {
	t.Helper()
	body := post(t, internal+"/irisx.broker.v1.TokenService/GetToken", "internal-token-for-tests",
		fmt.Sprintf(`{"irisAppId":%q,"accountId":%q}`, kmsTestApp, account))
	if !strings.Contains(body, `"accessToken"`) {
		t.Fatalf("GetToken for %s: %s", account, body)
	}
	return body
}

func kmsSim(t *testing.T) (*trackunitsim.Sim, string) {
	t.Helper()
	sim, err := trackunitsim.New(trackunitsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

// The round trip: generate a wrapped key, start, install, token,
// restart (a fresh process must unwrap again and decrypt the stored
// credentials for a cold token), then rotate the KMS key with `keys
// rewrap` and start under the new KMS key: every row still decrypts.
func TestKMSRoundTripAndRewrap(t *testing.T) {
	sim, simURL := kmsSim(t)
	dbURL := testdb.NewDatabase(t)
	oldKMS, newKMS := kmsTestKeyURL(t), kmsTestKeyURL(t)
	entry := kmsGenerate(t, oldKMS, "k1")

	public, internal, stop := kmsServe(t, kmsServeEnv(dbURL, simURL, oldKMS, entry))
	accounts := []string{uuid.NewString(), uuid.NewString()}
	for _, account := range accounts {
		clientID, secret := trackunitsim.NewClientCredentials()
		status, body, err := sim.SendInstall(context.Background(), public+"/appinstall",
			trackunitsim.InstallEvent{Type: "INSTALLED", IrisAppID: kmsTestApp, AccountID: account, ClientID: clientID, ClientSecret: secret}, "")
		if err != nil || status != 200 {
			t.Fatalf("install: %d %s %v", status, body, err)
		}
	}
	kmsGetToken(t, internal, accounts[0])
	stop()
	if ids := keysTestKeyIDs(t, dbURL); ids["k1"] != 2 || len(ids) != 1 {
		t.Fatalf("installs per key id: %v", ids)
	}

	// Restart: the in-memory token cache is gone, so a token needs the
	// stored credentials decrypted under the unwrapped key.
	_, internal, stop = kmsServe(t, kmsServeEnv(dbURL, simURL, oldKMS, entry))
	kmsGetToken(t, internal, accounts[1])
	stop()

	// KMS key rotation: rewrap, then start with the new KMS key only.
	e := map[string]string{"ENCRYPTION_KEYS": entry, "KMS_KEY_URL": oldKMS}
	out, stderr, err := kmsRun(t, e, "keys", "rewrap", "--to", newKMS)
	if err != nil {
		t.Fatalf("keys rewrap: %v\n%s", err, stderr)
	}
	rewrapped := strings.TrimSpace(out)
	if rewrapped == entry || !strings.HasPrefix(rewrapped, "k1:") || strings.Contains(out, "\n"+"k1") {
		t.Fatalf("keys rewrap printed %q", out)
	}
	for _, s := range []string{strings.TrimPrefix(oldKMS, "base64key://"), strings.TrimPrefix(newKMS, "base64key://")} {
		if strings.Contains(out+stderr, s) {
			t.Error("keys rewrap printed a KMS key")
		}
	}
	// The old KMS key no longer opens the new entries.
	_, stderr, err = kmsRun(t, kmsServeEnv(dbURL, simURL, oldKMS, rewrapped), "serve")
	if err == nil || !strings.Contains(stderr, "KMS_KEY_URL") {
		t.Errorf("serve with the old KMS key and rewrapped keys: %v\n%s", err, stderr)
	}
	_, internal, stop = kmsServe(t, kmsServeEnv(dbURL, simURL, newKMS, rewrapped))
	for _, account := range accounts {
		kmsGetToken(t, internal, account)
	}
	stop()
	if ids := keysTestKeyIDs(t, dbURL); ids["k1"] != 2 || len(ids) != 1 {
		t.Errorf("rewrap re-encrypted rows: installs per key id %v", ids)
	}
}

// Data key rotation under a KMS: a new wrapped key first, then
// `keys reencrypt` unwraps both and moves every row to the new one.
func TestKMSDataKeyRotation(t *testing.T) {
	dbURL := testdb.NewDatabase(t)
	kmsURL := kmsTestKeyURL(t)
	oldPlain := keysTestEntry(t, "old")
	keysTestSeed(t, dbURL, testkit.Keyring(t, oldPlain), testkit.Keyring(t, oldPlain))
	// Move the plain key to the KMS first (rewrap with no --from).
	out, stderr, err := kmsRun(t, map[string]string{"ENCRYPTION_KEYS": oldPlain}, "keys", "rewrap", "--to", kmsURL)
	if err != nil {
		t.Fatalf("keys rewrap from plain: %v\n%s", err, stderr)
	}
	oldWrapped := strings.TrimSpace(out)
	newWrapped := kmsGenerate(t, kmsURL, "new")
	out, stderr, err = kmsRun(t, map[string]string{
		"DATABASE_URL": dbURL, "KMS_KEY_URL": kmsURL, "ENCRYPTION_KEYS": newWrapped + "," + oldWrapped,
	}, "keys", "reencrypt")
	if err != nil || !strings.Contains(out, "old: 2 moved, 0 skipped (changed meanwhile), 0 failed") {
		t.Fatalf("keys reencrypt: %v\n%s\n%s", err, out, stderr)
	}
	if ids := keysTestKeyIDs(t, dbURL); ids["new"] != 2 || len(ids) != 1 {
		t.Errorf("installs per key id: %v", ids)
	}
}

// Each bad key setup refuses to start, naming the variable and printing no
// key, no wrapped key and no KMS URL.
func TestKMSServeRefuses(t *testing.T) {
	kmsURL, otherKMS := kmsTestKeyURL(t), kmsTestKeyURL(t)
	entry := kmsGenerate(t, kmsURL, "k1")
	wrapped := strings.SplitN(entry, ":", 2)[1]
	tests := []struct {
		name, kmsURL, keys string
		want               []string
	}{
		{"wrong KMS key", otherKMS, entry, []string{"KMS_KEY_URL: cannot unwrap entry 1 of ENCRYPTION_KEYS"}},
		{"wrapped key without KMS_KEY_URL", "", entry, []string{"ENCRYPTION_KEYS: crypto: invalid keyring", "is KMS_KEY_URL missing?"}},
		{"unsupported scheme", "s3://bucket/key", entry, []string{`KMS_KEY_URL: scheme "s3" is not supported`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The database is never reached: the keys come first.
			e := kmsServeEnv("postgres://127.0.0.1:1/x", "http://127.0.0.1:1", tt.kmsURL, tt.keys)
			_, stderr, err := kmsRun(t, e, "serve")
			if err == nil {
				t.Fatal("serve started")
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
			for _, s := range []string{wrapped, wrapped[:40], strings.TrimPrefix(kmsURL, "base64key://"), strings.TrimPrefix(otherKMS, "base64key://")} {
				if strings.Contains(stderr, s) {
					t.Errorf("stderr holds a key or wrapped key:\n%s", stderr)
				}
			}
		})
	}
}

// A KMS that cannot be reached fails the start within the bound (10 s),
// naming KMS_KEY_URL.
func TestKMSServeUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	t.Setenv("VAULT_SERVER_URL", "http://"+closed)
	t.Setenv("VAULT_SERVER_TOKEN", "vault-token-for-tests")
	entry := "k1:" + base64.StdEncoding.EncodeToString([]byte("vault:v1:"+strings.Repeat("A", 64)))
	start := time.Now()
	_, stderr, err := kmsRun(t, kmsServeEnv("postgres://127.0.0.1:1/x", "http://127.0.0.1:1", "hashivault://irisx-data-keys", entry), "serve")
	took := time.Since(start)
	if err == nil || !strings.Contains(stderr, "KMS_KEY_URL") {
		t.Fatalf("serve: %v\n%s", err, stderr)
	}
	if took > 12*time.Second {
		t.Errorf("took %s; the bound is 10 s", took)
	}
	if strings.Contains(stderr, "vault-token-for-tests") || strings.Contains(stderr, strings.Repeat("A", 64)) {
		t.Errorf("stderr holds the Vault token or the wrapped key:\n%s", stderr)
	}
	t.Logf("%s after %s", strings.TrimSpace(stderr), took.Round(time.Millisecond))
}
