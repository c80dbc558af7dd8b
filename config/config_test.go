package config

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const testKey = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes

func lookupFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func validEnv() map[string]string {
	return map[string]string{
		"DATABASE_URL":        "postgres://u:hunter2@db:5432/broker",
		"ENCRYPTION_KEYS":     testKey,
		"INTERNAL_API_TOKENS": "internal-token-000000",
		"ADMIN_API_TOKENS":    "admin-token-0000000, admin-token-1111111",
	}
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(context.Background(), lookupFrom(validEnv()), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]any{
		"public": c.PublicAddr, "internal": c.InternalAddr, "jwks": c.JWKSURL, "auth": c.AuthURL,
		"leeway": c.IdentityLeeway, "maxAge": c.IdentityMaxAge, "margin": c.TokenRefreshMargin,
		"format": c.LogFormat, "admins": len(c.AdminAPITokens), "primary": c.Keyring.PrimaryID(),
	}
	want := map[string]any{
		"public": ":8080", "internal": "127.0.0.1:8081", "jwks": "https://iris.trackunit.com/api/marketplace/jwks",
		"auth": "https://auth.trackunit.com", "leeway": 60 * time.Second, "maxAge": 10 * time.Minute,
		"margin": 5 * time.Minute, "format": "json", "admins": 2, "primary": "k1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestLoadLists(t *testing.T) {
	env := validEnv()
	env["ALLOWED_APP_IDS"] = " @a/one ,@b/two,, "
	env["DEFAULT_SCOPES"] = "asset.view  account.view"
	env["TRACKUNIT_AUTH_URL"] = "http://127.0.0.1:9/"
	c, err := Load(context.Background(), lookupFrom(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"@a/one", "@b/two"}, c.AllowedAppIDs); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff([]string{"asset.view", "account.view"}, c.DefaultScopes); diff != "" {
		t.Error(diff)
	}
	if c.AuthURL != "http://127.0.0.1:9" {
		t.Errorf("AuthURL = %q, want the trailing slash trimmed", c.AuthURL)
	}
}

// Every bad variable is named in one error, and no value leaks into it.
func TestLoadReportsEveryProblemWithoutValues(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL":         "mysql://root:hunter2@db/x",
		"ENCRYPTION_KEYS":      "k1:c2hvcnQtc2VjcmV0LWtleQ==",
		"ADMIN_API_TOKENS":     " , ",
		"PUBLIC_ADDR":          "nonsense",
		"IDENTITY_LEEWAY":      "sixty",
		"IDENTITY_MAX_AGE":     "-1s",
		"TOKEN_REFRESH_MARGIN": "5 minutes",
		"TRACKUNIT_JWKS_URL":   "ftp://x",
		"LOG_LEVEL":            "loud",
		"LOG_FORMAT":           "xml",
	}
	_, err := Load(context.Background(), lookupFrom(env), nil)
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *Error", err)
	}
	msg := err.Error()
	for _, name := range []string{"DATABASE_URL", "ENCRYPTION_KEYS", "INTERNAL_API_TOKENS", "ADMIN_API_TOKENS",
		"PUBLIC_ADDR", "IDENTITY_LEEWAY", "IDENTITY_MAX_AGE", "TOKEN_REFRESH_MARGIN", "TRACKUNIT_JWKS_URL", "LOG_LEVEL", "LOG_FORMAT"} {
		if !strings.Contains(msg, name+":") {
			t.Errorf("message does not name %s:\n%s", name, msg)
		}
	}
	for _, secret := range []string{"hunter2", "c2hvcnQtc2VjcmV0LWtleQ", "short-secret"} {
		if strings.Contains(msg, secret) {
			t.Errorf("message leaks %q:\n%s", secret, msg)
		}
	}
}

func TestLoadKeysFile(t *testing.T) {
	env := validEnv()
	delete(env, "ENCRYPTION_KEYS")
	env["ENCRYPTION_KEYS_FILE"] = "/run/secrets/keys"
	second := "k0:ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
	read := func(p string) ([]byte, error) {
		if p != "/run/secrets/keys" {
			return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
		}
		return []byte(testKey + "\n" + second + "\n"), nil
	}
	c, err := Load(context.Background(), lookupFrom(env), read)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"k1", "k0"}, c.Keyring.IDs()); diff != "" {
		t.Error(diff)
	}

	env["ENCRYPTION_KEYS_FILE"] = "/missing"
	if _, err := Load(context.Background(), lookupFrom(env), read); err == nil || !strings.Contains(err.Error(), "ENCRYPTION_KEYS_FILE: cannot be read") {
		t.Errorf("missing file: err = %v", err)
	}
	env["ENCRYPTION_KEYS"] = testKey
	if _, err := Load(context.Background(), lookupFrom(env), read); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("both set: err = %v", err)
	}
}

func TestSecretsDoNotPrint(t *testing.T) {
	c, err := Load(context.Background(), lookupFrom(validEnv()), nil)
	if err != nil {
		t.Fatal(err)
	}
	printed := fmt.Sprintf("%v %+v %#v", c, *c, c)
	for _, secret := range []string{"hunter2", "internal-token-000000", "admin-token-0000000", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY", "0123456789abcdef"} {
		if strings.Contains(printed, secret) {
			t.Errorf("printing the config leaks %q: %s", secret, printed)
		}
	}
}

// LoadStorage checks DATABASE_URL and the keys exactly as Load does, and
// nothing else: `keys reencrypt` needs no API tokens.
func TestLoadStorage(t *testing.T) {
	keysFile := func(p string) ([]byte, error) {
		if p == "/run/secrets/keys" {
			return []byte(testKey + "\n"), nil
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	tests := []struct {
		name    string
		env     map[string]string
		primary string // when valid
	}{
		{"keys in the environment", map[string]string{"DATABASE_URL": "postgres://db/x", "ENCRYPTION_KEYS": testKey}, "k1"},
		{"keys in a file", map[string]string{"DATABASE_URL": "postgres://db/x", "ENCRYPTION_KEYS_FILE": "/run/secrets/keys"}, "k1"},
		{"nothing set", map[string]string{}, ""},
		{"bad values", map[string]string{"DATABASE_URL": "mysql://root:hunter2@db/x", "ENCRYPTION_KEYS": "k1:c2hvcnQtc2VjcmV0LWtleQ=="}, ""},
		{"both key sources", map[string]string{"DATABASE_URL": "postgres://db/x", "ENCRYPTION_KEYS": testKey, "ENCRYPTION_KEYS_FILE": "/run/secrets/keys"}, ""},
		{"unreadable key file", map[string]string{"DATABASE_URL": "postgres://db/x", "ENCRYPTION_KEYS_FILE": "/missing"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := LoadStorage(context.Background(), lookupFrom(tt.env), keysFile)
			if tt.primary != "" {
				if err != nil {
					t.Fatalf("LoadStorage: %v", err)
				}
				if s.Keyring.PrimaryID() != tt.primary || s.DatabaseURL.Reveal() != tt.env["DATABASE_URL"] {
					t.Errorf("LoadStorage = %v, want primary %s and the database URL", s, tt.primary)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *Error", err)
			}
			// The same problems, word for word, as Load finds for these
			// variables (Load also finds the missing tokens).
			_, loadErr := Load(context.Background(), lookupFrom(tt.env), keysFile)
			var le *Error
			if !errors.As(loadErr, &le) {
				t.Fatalf("Load err = %v, want *Error", loadErr)
			}
			var want []string
			for _, p := range le.Problems {
				if strings.HasPrefix(p, "DATABASE_URL:") || strings.HasPrefix(p, "ENCRYPTION_KEYS") {
					want = append(want, p)
				}
			}
			if diff := cmp.Diff(want, ce.Problems); diff != "" {
				t.Errorf("problems (-Load's +LoadStorage's):\n%s", diff)
			}
			for _, secret := range []string{"hunter2", "c2hvcnQtc2VjcmV0LWtleQ"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("message leaks %q: %s", secret, err)
				}
			}
		})
	}
}

// A short bearer token is accepted, as the contract sets no minimum, with a
// warning that names the variable and not the token.
func TestLoadWarnsOfShortTokens(t *testing.T) {
	env := validEnv()
	env["INTERNAL_API_TOKENS"] = "internal-token-000000,tiny-tok"
	c, err := Load(context.Background(), lookupFrom(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.InternalAPITokens) != 2 {
		t.Errorf("%d internal tokens, want 2", len(c.InternalAPITokens))
	}
	want := []string{"INTERNAL_API_TOKENS: token 2 is shorter than 16 characters; use long random tokens"}
	if diff := cmp.Diff(want, c.Warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}
