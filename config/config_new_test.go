package config

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
)

func TestLoadNewVariables(t *testing.T) {
	env := validEnv()
	c, err := Load(context.Background(), lookupFrom(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseDirectURL != c.DatabaseURL {
		t.Error("DATABASE_DIRECT_URL should default to DATABASE_URL")
	}
	if c.ShutdownDrain.String() != "5s" || c.EventRetention.String() != "168h0m0s" || c.IrisAPIURL != "https://iris.trackunit.com" {
		t.Errorf("defaults: drain %s retention %s iris %q", c.ShutdownDrain, c.EventRetention, c.IrisAPIURL)
	}

	env["DATABASE_DIRECT_URL"] = "postgres://direct@127.0.0.1:5432/x"
	env["EVENT_WEBHOOK_URL"] = "http://127.0.0.1:9/hook"
	env["EVENT_WEBHOOK_SECRET"] = "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 32))
	c, err = Load(context.Background(), lookupFrom(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseDirectURL.Reveal() != env["DATABASE_DIRECT_URL"] || c.EventWebhookURL != env["EVENT_WEBHOOK_URL"] {
		t.Errorf("direct %v webhook %q", c.DatabaseDirectURL, c.EventWebhookURL)
	}
}

func TestLoadRefusesBadWebhookSecret(t *testing.T) {
	for name, secret := range map[string]string{
		"missing":   "",
		"no prefix": base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"too short": "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 16)),
		"too long":  "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65)),
		"not b64":   "whsec_%%%%",
	} {
		env := validEnv()
		env["EVENT_WEBHOOK_URL"] = "http://127.0.0.1:9/hook"
		env["EVENT_WEBHOOK_SECRET"] = secret
		_, err := Load(context.Background(), lookupFrom(env), nil)
		if err == nil || !strings.Contains(err.Error(), "EVENT_WEBHOOK_SECRET") {
			t.Errorf("%s: err = %v, want one naming EVENT_WEBHOOK_SECRET", name, err)
		}
		if secret != "" && err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error echoes the secret", name)
		}
	}
}
