package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

func TestInstallsList(t *testing.T) {
	sim, err := trackunitsim.New(trackunitsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	public, internal := startServe(t, sim, nil)
	var accounts []string
	for i := range 3 {
		a := uuid.NewString()
		accounts = append(accounts, a)
		typ := "INSTALLED"
		if i == 2 {
			typ = "UNINSTALLED"
		}
		clientID, secret := trackunitsim.NewClientCredentials()
		if status, body, err := sim.SendInstall(context.Background(), public+"/appinstall",
			trackunitsim.InstallEvent{Type: typ, IrisAppID: "@irisx/cli", AccountID: a, ClientID: clientID, ClientSecret: secret}, ""); err != nil || status != 200 {
			t.Fatalf("install: %d %s %v", status, body, err)
		}
	}
	e := mapEnv(map[string]string{"IRISX_ADMIN_TOKEN": "admin-token-for-tests"})

	var out bytes.Buffer
	if err := run(context.Background(), []string{"irisx-broker", "installs", "list", "--server", internal}, e, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "IRIS APP ID") {
		t.Fatalf("table:\n%s", out.String())
	}
	for _, a := range accounts {
		if !strings.Contains(out.String(), a) {
			t.Errorf("table lacks %s", a)
		}
	}

	out.Reset()
	if err := run(context.Background(), []string{"irisx-broker", "installs", "list", "--server", internal, "--status", "uninstalled", "--json"}, e, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("--json line %q: %v", line, err)
		}
		got = append(got, m)
	}
	if len(got) != 1 || got[0]["accountId"] != accounts[2] || got[0]["status"] != "uninstalled" {
		t.Errorf("--json --status uninstalled = %v", got)
	}

	// A wrong token is refused with a clear error.
	bad := mapEnv(map[string]string{"IRISX_ADMIN_TOKEN": "wrong-token-000000"})
	if err := run(context.Background(), []string{"irisx-broker", "installs", "list", "--server", internal}, bad, nil, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "unauthenticated") {
		t.Errorf("wrong token: %v", err)
	}
}
