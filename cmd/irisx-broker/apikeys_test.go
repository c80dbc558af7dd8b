package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

func apiKeysCLI(t *testing.T, server, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	e := map[string]string{"IRISX_ADMIN_TOKEN": "admin-token-for-tests", "IRISX_BROKER_SERVER": server}
	err := run(ctx, append([]string{"irisx-broker", "api-keys"}, args...), mapEnv(e), strings.NewReader(stdin), &out, &errOut)
	return out.String() + errOut.String(), err
}

// API keys end to end: registered from the CLI (secret on standard input or
// in a file), tokens over Connect, a scope outside the key's refused without
// an upstream call, a revoked key failed_precondition with no further call.
func TestAPIKeysEndToEnd(t *testing.T) {
	sim, err := trackunitsim.New(trackunitsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, internal := startServe(t, sim, nil)
	idA, secretA := trackunitsim.NewClientCredentials()
	idB, secretB := trackunitsim.NewClientCredentials()
	sim.AddAPIKey(idA, secretA, []string{"asset.view", "account.view"})
	sim.AddAPIKey(idB, secretB, []string{"asset.view"})

	out, err := apiKeysCLI(t, internal, secretA.Reveal()+"\n", "add", "--name", "a", "--client-id", idA, "--scopes", "asset.view account.view")
	if err != nil || !strings.Contains(out, "registered API key a") {
		t.Fatalf("add from stdin: %v %s", err, out)
	}
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(secretB.Reveal()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := apiKeysCLI(t, internal, "", "add", "--name", "b", "--client-id", idB, "--scopes", "asset.view", "--client-secret-file", file); err != nil {
		t.Fatalf("add from a file: %v %s", err, out)
	}
	out, err = apiKeysCLI(t, internal, "", "list", "--json")
	if err != nil || strings.Count(out, "\n") != 2 || strings.Contains(out, secretA.Reveal()) || strings.Contains(out, idA) {
		t.Fatalf("list: %v %q (secrets or full client ids must not appear)", err, out)
	}
	var listed map[string]any
	_ = json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &listed)
	if hint, _ := listed["clientIdHint"].(string); hint != idA[len(idA)-4:] {
		t.Errorf("clientIdHint = %q, want the last 4 characters", hint)
	}

	tokenOf := func(body string) map[string]any {
		var m map[string]any
		_ = json.Unmarshal([]byte(post(t, internal+"/irisx.broker.v1.TokenService/GetApiKeyToken", "internal-token-for-tests", body)), &m)
		return m
	}
	if m := tokenOf(`{"name":"a"}`); !sim.ValidAccessToken(m["accessToken"].(string)) {
		t.Fatalf("GetApiKeyToken: %v", m)
	}
	calls := sim.Calls(trackunitsim.EndpointTokenV2)
	if m := tokenOf(`{"name":"b","scopes":["account.view"]}`); m["code"] != "invalid_argument" {
		t.Errorf("scope outside the key's: %v, want invalid_argument", m)
	}
	if got := sim.Calls(trackunitsim.EndpointTokenV2); got != calls {
		t.Errorf("a scope outside the key's made %d upstream calls, want 0", got-calls)
	}
	sim.RevokeAPIKey(idB)
	if m := tokenOf(`{"name":"b"}`); m["code"] != "failed_precondition" {
		t.Fatalf("revoked key: %v, want failed_precondition", m)
	}
	calls = sim.Calls(trackunitsim.EndpointTokenV2)
	for range 3 {
		if m := tokenOf(`{"name":"b"}`); m["code"] != "failed_precondition" {
			t.Fatalf("revoked key again: %v", m)
		}
	}
	if got := sim.Calls(trackunitsim.EndpointTokenV2); got != calls {
		t.Errorf("a revoked key made %d more upstream calls, want 0", got-calls)
	}
	if m := tokenOf(`{"name":"nobody"}`); m["code"] != "not_found" {
		t.Errorf("unknown key: %v, want not_found", m)
	}
	if out, err := apiKeysCLI(t, internal, "", "delete", "--name", "b"); err != nil || !strings.Contains(out, "deleted API key b") {
		t.Fatalf("delete: %v %s", err, out)
	}
	if m := tokenOf(`{"name":"b"}`); m["code"] != "not_found" {
		t.Errorf("deleted key: %v, want not_found", m)
	}
}
