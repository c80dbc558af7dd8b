package config

import (
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"
)

func TestRefreshMarginZeroMeansZero(t *testing.T) {
	env := validEnv()
	env["TOKEN_REFRESH_MARGIN"] = "0s"
	c, err := Load(context.Background(), lookupFrom(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.TokenRefreshMargin != 0 {
		t.Errorf("margin %s, want 0", c.TokenRefreshMargin)
	}
	delete(env, "TOKEN_REFRESH_MARGIN")
	if c, _ := Load(context.Background(), lookupFrom(env), nil); c.TokenRefreshMargin != 5*time.Minute {
		t.Errorf("default margin %s, want 5m", c.TokenRefreshMargin)
	}
}

func TestSharedTokenRefused(t *testing.T) {
	env := validEnv()
	env["INTERNAL_API_TOKENS"] = "internal-token-000000,shared-token-0000000"
	env["ADMIN_API_TOKENS"] = "admin-token-0000000, shared-token-0000000"
	_, err := Load(context.Background(), lookupFrom(env), nil)
	if err == nil || !strings.Contains(err.Error(), "ADMIN_API_TOKENS: token 2 is also INTERNAL_API_TOKENS token 2") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "shared-token") {
		t.Error("the error shows the token")
	}
}

func TestIdentityBounds(t *testing.T) {
	for _, c := range []struct {
		name, value, want string
	}{
		{"IDENTITY_LEEWAY", "5m", ""},
		{"IDENTITY_LEEWAY", "5m1s", "IDENTITY_LEEWAY: must be at most 5m0s"},
		{"IDENTITY_LEEWAY", "1h", "IDENTITY_LEEWAY: must be at most 5m0s"},
		{"IDENTITY_MAX_AGE", "24h", ""},
		{"IDENTITY_MAX_AGE", "25h", "IDENTITY_MAX_AGE: must be at most 24h0m0s"},
		{"IDENTITY_MAX_AGE", "8760h", "IDENTITY_MAX_AGE: must be at most 24h0m0s"},
	} {
		env := validEnv()
		env[c.name] = c.value
		_, err := Load(context.Background(), lookupFrom(env), nil)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s=%s: %v", c.name, c.value, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s=%s: err = %v, want %q", c.name, c.value, err, c.want)
		}
	}
}

func TestInternalAddrWarning(t *testing.T) {
	for addr, exposed := range map[string]bool{
		"127.0.0.1:8081": false, "[::1]:8081": false, "localhost:8081": false, "127.0.0.2:8081": false,
		":8081": true, "0.0.0.0:8081": true, "[::]:8081": true, "10.0.0.5:8081": true, "broker.internal:8081": true,
	} {
		env := validEnv()
		env["INTERNAL_ADDR"] = addr
		c, err := Load(context.Background(), lookupFrom(env), nil)
		if err != nil {
			t.Fatal(err)
		}
		warned := strings.Contains(strings.Join(c.Warnings, "\n"), "INTERNAL_ADDR: not a loopback address, so the internal API")
		if warned != exposed {
			t.Errorf("INTERNAL_ADDR=%s: warned %v, want %v (%q)", addr, warned, exposed, c.Warnings)
		}
	}
}

// fakeFiles reads from a map, as the *_FILE variables would from disk.
func fakeFiles(files map[string]string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		s, ok := files[name]
		if !ok {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		return []byte(s), nil
	}
}

func TestSecretFiles(t *testing.T) {
	webhook := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 32))
	values := map[string]string{
		"DATABASE_URL":         "postgres://u:filepass@db:5432/broker",
		"DATABASE_DIRECT_URL":  "postgres://u:filepass@db-direct:5432/broker",
		"ENCRYPTION_KEYS":      testKey,
		"INTERNAL_API_TOKENS":  "file-internal-token-0000",
		"ADMIN_API_TOKENS":     "file-admin-token-00000",
		"EVENT_WEBHOOK_SECRET": webhook,
	}
	files := map[string]string{}
	env := map[string]string{"EVENT_WEBHOOK_URL": "https://hooks.example/x"}
	for name, v := range values {
		path := "/run/secrets/" + strings.ToLower(name)
		files[path] = "\n  " + v + " \n" // surrounding white space is trimmed
		env[name+"_FILE"] = path
	}
	c, err := Load(context.Background(), lookupFrom(env), fakeFiles(files))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{
		"DATABASE_URL": c.DatabaseURL.Reveal(), "DATABASE_DIRECT_URL": c.DatabaseDirectURL.Reveal(),
		"ENCRYPTION_KEYS":     c.Keyring.PrimaryID() + ":", // a keyring shows its ids only
		"INTERNAL_API_TOKENS": c.InternalAPITokens[0].Reveal(), "ADMIN_API_TOKENS": c.AdminAPITokens[0].Reveal(),
		"EVENT_WEBHOOK_SECRET": c.EventWebhookSecret.Reveal(),
	}
	for name, want := range values {
		if name == "ENCRYPTION_KEYS" {
			want = strings.SplitN(testKey, ":", 2)[0] + ":"
		}
		if got[name] != want {
			t.Errorf("%s from file = %q, want %q", name, got[name], want)
		}
	}

	// Both set: an error naming the variable, never a value.
	for name, v := range values {
		both := map[string]string{}
		for k, x := range env {
			both[k] = x
		}
		both[name] = v
		_, err := Load(context.Background(), lookupFrom(both), fakeFiles(files))
		want := name + ": set either " + name + " or " + name + "_FILE, not both"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s and %s_FILE: err = %v, want %q", name, name, err, want)
		} else if strings.Contains(err.Error(), v) {
			t.Errorf("%s: the error shows the value", name)
		}
	}

	// An unreadable file names the _FILE variable.
	env["ADMIN_API_TOKENS_FILE"] = "/run/secrets/missing"
	_, err = Load(context.Background(), lookupFrom(env), fakeFiles(files))
	var ce *Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "ADMIN_API_TOKENS_FILE: cannot be read: file does not exist") {
		t.Errorf("unreadable file: %v", err)
	} else if strings.Contains(err.Error(), "ADMIN_API_TOKENS: required") {
		t.Errorf("the unreadable file is reported twice: %v", err)
	}
}
