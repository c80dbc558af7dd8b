package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

const identityTestIssuer = "https://iris.trackunit.example"

// identityCheck runs `irisx-broker identity check` with args and env.
func identityCheck(t *testing.T, e map[string]string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, append([]string{"irisx-broker", "identity", "check"}, args...), mapEnv(e), strings.NewReader(""), &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func identitySim(t *testing.T, opts trackunitsim.Options) (*trackunitsim.Sim, string) {
	t.Helper()
	sim, err := trackunitsim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	return sim, srv.URL + "/api/marketplace/jwks"
}

// keyLine is the table row of kid.
func keyLine(t *testing.T, out, kid string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, kid+" ") {
			return l
		}
	}
	t.Fatalf("no row for %s in:\n%s", kid, out)
	return ""
}

func TestIdentityCheckSimulatorKeys(t *testing.T) {
	sim, jwks := identitySim(t, trackunitsim.Options{SkippedKeys: trackunitsim.SkippedKeyKinds()})
	// The default URL comes from TRACKUNIT_JWKS_URL.
	out, stderr, err := identityCheck(t, map[string]string{"TRACKUNIT_JWKS_URL": jwks})
	if err != nil {
		t.Fatalf("identity check: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "5 keys, 1 usable") {
		t.Errorf("summary missing:\n%s", out)
	}
	kids := sim.KIDs()
	want := map[string]*regexp.Regexp{
		kids[0]: regexp.MustCompile(`RSA\s+RS256\s+sig\s+2048 bits\s+use$`),
		kids[1]: regexp.MustCompile(`RSA\s+RS256\s+sig\s+1024 bits\s+skip: weak RSA key: 1024 bits, fewer than 2048$`),
		kids[2]: regexp.MustCompile(`oct\s+HS256\s+sig\s+256 bits\s+skip: symmetric key`),
		kids[3]: regexp.MustCompile(`RSA\s+RS256\s+sig\s+2048 bits\s+skip: private key`),
		kids[4]: regexp.MustCompile(`RSA\s+RSA-OAEP-256\s+enc\s+2048 bits\s+skip: key is not for signatures$`),
	}
	for kid, re := range want {
		if l := keyLine(t, out, kid); !re.MatchString(l) {
			t.Errorf("row %q does not match %s", l, re)
		}
	}
	// The symmetric secret and the private exponent are never printed.
	raw, _ := sim.JWKSJSON()
	for _, secret := range regexp.MustCompile(`"(?:k|d|p|q)":"([^"]+)"`).FindAllStringSubmatch(string(raw), -1) {
		if strings.Contains(out, secret[1]) {
			t.Errorf("output holds key material %.20s…", secret[1])
		}
	}

	// Only skipped keys: listed, and a failure.
	sim.RemoveKey(kids[0])
	out, _, err = identityCheck(t, nil, "--jwks", jwks)
	if err == nil {
		t.Fatal("identity check succeeded without a usable key")
	}
	if !strings.Contains(out, "4 keys, 0 usable") || !strings.Contains(out, "skip: symmetric key") {
		t.Errorf("output:\n%s", out)
	}
}

func TestIdentityCheckRefusesRedirectAndOversize(t *testing.T) {
	_, jwks := identitySim(t, trackunitsim.Options{})
	var followed atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		followed.Add(1)
		http.Redirect(w, r, jwks, http.StatusFound)
	}))
	defer target.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	}))
	defer redirect.Close()
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"keys":[],"pad":"` + strings.Repeat("x", 1<<20) + `"}`))
	}))
	defer big.Close()

	for _, tc := range []struct{ name, url, want string }{
		{"redirect", redirect.URL, "unexpected status 302"},
		{"oversized", big.URL, "larger than 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := identityCheck(t, nil, "--jwks", tc.url)
			if err == nil {
				t.Fatalf("identity check succeeded:\n%s", out)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q lacks %q", stderr, tc.want)
			}
			if strings.Contains(out, "usable") {
				t.Errorf("keys listed from a refused JWKS:\n%s", out)
			}
		})
	}
	if n := followed.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
}

func TestIdentityCheckToken(t *testing.T) {
	const planted = "PLANTED-claim-value-31ab"
	sim, jwks := identitySim(t, trackunitsim.Options{Issuer: identityTestIssuer, Audience: "irisx-broker"})
	tok, err := sim.SignIdentity(trackunitsim.Claims{"irisAppId": "@acme/app", "accountId": planted})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("Bearer "+tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"IDENTITY_ISSUER": identityTestIssuer, "IDENTITY_AUDIENCE": "irisx-broker"}

	out, stderr, err := identityCheck(t, env, "--jwks", jwks, "--token", file)
	if err != nil {
		t.Fatalf("good token: %v\n%s\n%s", err, out, stderr)
	}
	for _, want := range []string{
		"verdict:  accepted", "iss:      " + identityTestIssuer, "aud:      [irisx-broker]",
		"claims:   [accountId aud exp iat irisAppId iss jti] (7)", "lifetime: 5m0s", "typ:      JWT",
		"kid:      " + sim.SigningKID(),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	assertNoToken(t, out+stderr, tok, planted)

	env["IDENTITY_ISSUER"] = "https://guessed-wrong.example"
	out, stderr, err = identityCheck(t, env, "--jwks", jwks, "--token", file)
	if err == nil {
		t.Fatalf("wrong-issuer token accepted:\n%s", out)
	}
	if !strings.Contains(out, "verdict:  refused (rule: issuer)") || !strings.Contains(out, "iss:      "+identityTestIssuer) {
		t.Errorf("output:\n%s", out)
	}
	if !strings.Contains(stderr, "the token is refused: issuer") {
		t.Errorf("stderr %q", stderr)
	}
	assertNoToken(t, out+stderr, tok, planted)

	// A captured token is too old by now; --at judges it as of its time.
	env["IDENTITY_ISSUER"] = identityTestIssuer
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if out, _, err = identityCheck(t, env, "--jwks", jwks, "--token", file, "--at", later); err == nil || !strings.Contains(out, "rule: expired") {
		t.Errorf("an hour later: %v\n%s", err, out)
	}
	env["IDENTITY_MAX_AGE"] = "48h"
	if _, stderr, err = identityCheck(t, env, "--jwks", jwks); err == nil || !strings.Contains(stderr, "IDENTITY_MAX_AGE") {
		t.Errorf("IDENTITY_MAX_AGE=48h: %v %q", err, stderr)
	}
}

func assertNoToken(t *testing.T, out, tok, planted string) {
	t.Helper()
	if strings.Contains(out, planted) {
		t.Errorf("output holds a claim value")
	}
	for _, part := range strings.Split(tok, ".") {
		if strings.Contains(out, part) {
			t.Errorf("output holds a token part %.20s…", part)
		}
	}
}
