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

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// apiUsersCLI runs `irisx-broker api-users ...` against server.
func apiUsersCLI(t *testing.T, server, stdin string, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	e := map[string]string{"IRISX_ADMIN_TOKEN": "admin-token-for-tests", "IRISX_BROKER_SERVER": server}
	for k, v := range env {
		e[k] = v
	}
	err = run(ctx, append([]string{"irisx-broker", "api-users"}, args...), mapEnv(e), strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestAPIUsersCommands(t *testing.T) {
	sim, err := trackunitsim.New(trackunitsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	type user struct {
		name, username, clientID string
		password, secret         crypto.Secret
	}
	newUser := func(name string) user {
		clientID, secret := trackunitsim.NewClientCredentials()
		u := user{name: name, username: name + "@api.example", clientID: clientID, secret: secret,
			password: crypto.Secret("pass phrase with spaces " + name)}
		sim.AddUser(u.username, u.password, u.clientID, u.secret)
		return u
	}
	fromStdin, fromFiles, mixed := newUser("from-stdin"), newUser("from-files"), newUser("mixed")
	_, internal := startServe(t, sim, nil)

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		u     user
		stdin string
		files []string
	}{
		{fromStdin, fromStdin.password.Reveal() + "\n" + fromStdin.secret.Reveal() + "\n", nil},
		{fromFiles, "", []string{"--password-file", write("pw", fromFiles.password.Reveal()+"\r\n"),
			"--client-secret-file", write("secret", fromFiles.secret.Reveal())}},
		{mixed, mixed.secret.Reveal(), []string{"--password-file", write("pw2", mixed.password.Reveal()+"\n")}},
	} {
		args := append([]string{"add", "--name", c.u.name, "--username", c.u.username, "--client-id", c.u.clientID}, c.files...)
		out, errOut, err := apiUsersCLI(t, internal, c.stdin, nil, args...)
		if err != nil || !strings.Contains(out, "registered API user "+c.u.name) || !strings.Contains(out, "api offline_access") {
			t.Fatalf("api-users add %s: %v\n%s%s", c.u.name, err, out, errOut)
		}
		// The stored password and secret are right: Trackunit accepts them.
		body := post(t, internal+"/irisx.broker.v1.TokenService/GetApiUserToken", "internal-token-for-tests", `{"name":"`+c.u.name+`"}`)
		var tok struct{ AccessToken string }
		if err := json.Unmarshal([]byte(body), &tok); err != nil || !sim.ValidAccessToken(tok.AccessToken) {
			t.Errorf("GetApiUserToken for %s: %s", c.u.name, body)
		}
	}

	out, _, err := apiUsersCLI(t, internal, "", nil, "list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "from-files") ||
		!strings.Contains(lines[2], "from-stdin@api.example") || !strings.Contains(lines[3], "active") {
		t.Errorf("api-users list:\n%s", out)
	}
	jsonOut, _, err := apiUsersCLI(t, internal, "", nil, "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(jsonOut), "\n") {
		var u struct{ Name, Status, LastTokenAt string }
		if err := json.Unmarshal([]byte(line), &u); err != nil || u.Status != "active" || u.LastTokenAt == "" {
			t.Errorf("api-users list --json line %q: %v", line, err)
		}
		names = append(names, u.Name)
	}
	if strings.Join(names, ",") != "from-files,from-stdin,mixed" {
		t.Errorf("api-users list --json names = %v", names)
	}
	for _, u := range []user{fromStdin, fromFiles, mixed} {
		for _, s := range []string{u.password.Reveal(), u.secret.Reveal(), u.clientID} {
			if strings.Contains(out+jsonOut, s) {
				t.Errorf("api-users list printed a secret of %s", u.name)
			}
		}
	}

	if out, _, err := apiUsersCLI(t, internal, "", nil, "delete", "--name", "mixed"); err != nil || out != "deleted API user mixed\n" {
		t.Errorf("api-users delete: %q, %v", out, err)
	}
	if _, errOut, err := apiUsersCLI(t, internal, "", nil, "delete", "--name", "mixed"); err == nil || !strings.Contains(errOut, "not_found") {
		t.Errorf("deleting twice: %v, %q", err, errOut)
	}
}

// Refused invocations fail before any call, and never echo a secret.
func TestAPIUsersCommandErrors(t *testing.T) {
	const server = "http://127.0.0.1:1" // never reached
	for _, tc := range []struct {
		name  string
		stdin string
		env   map[string]string
		args  []string
		want  string
	}{
		{"no command", "", nil, nil, "usage:"},
		{"unknown command", "", nil, []string{"rename"}, "unknown api-users command"},
		{"password as a flag", "", nil, []string{"add", "--name", "n", "--password=hunter2-secret"}, "not defined: -password"},
		{"secret as an argument", "", nil, []string{"add", "--name", "n", "hunter2-secret"}, "unexpected arguments"},
		{"no name", "", nil, []string{"delete"}, "--name is required"},
		{"no admin token", "", map[string]string{"IRISX_ADMIN_TOKEN": ""}, []string{"list"}, "IRISX_ADMIN_TOKEN"},
		{"nothing on stdin", "", nil, []string{"add", "--name", "n", "--username", "u", "--client-id", "c"}, "no password given"},
		{"no client secret", "hunter2-secret\n", nil, []string{"add", "--name", "n", "--username", "u", "--client-id", "c"}, "no client secret given"},
		{"missing file", "", nil, []string{"add", "--name", "n", "--password-file", "/nonexistent/pw"}, "reading the password"},
	} {
		out, errOut, err := apiUsersCLI(t, server, tc.stdin, tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
		if strings.Contains(out+errOut+errString(err), "hunter2-secret") {
			t.Errorf("%s: a secret was echoed", tc.name)
		}
	}
	if out, _, err := apiUsersCLI(t, server, "", nil, "help"); err != nil || !strings.Contains(out, "--password-file") {
		t.Errorf("api-users help: %q, %v", out, err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
