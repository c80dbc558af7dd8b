package config

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
)

// A wrapped entry (longer than a 32-byte key) is the caller's to unwrap
// when KMS_KEY_URL is set, and a refusal naming KMS_KEY_URL when it is not.
func TestLoadWrappedKeys(t *testing.T) {
	wrapped := "k1:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("w", 72)))
	env := validEnv()
	env["ENCRYPTION_KEYS"] = wrapped
	env["KMS_KEY_URL"] = "base64key://smGbjm71Nxd1Ig5FS0wj9SlbzAIrnolCz9bQQ6uAhl4="
	c, err := Load(context.Background(), lookupFrom(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Keyring != nil || c.WrappedKeys.Reveal() != wrapped || c.KMSKeyURL != env["KMS_KEY_URL"] {
		t.Errorf("keyring %v, wrapped keys kept %v, KMS_KEY_URL kept %v", c.Keyring, c.WrappedKeys.Reveal() == wrapped, c.KMSKeyURL == env["KMS_KEY_URL"])
	}

	delete(env, "KMS_KEY_URL")
	_, err = Load(context.Background(), lookupFrom(env), nil)
	if err == nil || !strings.Contains(err.Error(), "ENCRYPTION_KEYS") || !strings.Contains(err.Error(), "KMS_KEY_URL missing") {
		t.Errorf("wrapped key without KMS_KEY_URL: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), wrapped[3:]) {
		t.Error("the error echoes the wrapped key")
	}

	env["KMS_KEY_URL"] = "no scheme here"
	_, err = Load(context.Background(), lookupFrom(env), nil)
	if err == nil || !strings.Contains(err.Error(), "KMS_KEY_URL: must be") || strings.Contains(err.Error(), "no scheme here") {
		t.Errorf("bad KMS_KEY_URL: %v", err)
	}
}
