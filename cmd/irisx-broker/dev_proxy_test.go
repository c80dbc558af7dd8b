package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/internal/testdb"
)

// The proxy curl `dev` prints reaches the simulator's IRIS stand-in as the
// account, with the account's token and not the caller's.
func TestDevProxyCurl(t *testing.T) {
	dbURL := testdb.NewDatabase(t)
	stdout, stderr, result, stop := started(t,
		[]string{"irisx-broker", "dev", "--sim-addr", "127.0.0.1:0", "--state-dir", t.TempDir()},
		map[string]string{"DATABASE_URL": dbURL, "PUBLIC_ADDR": "127.0.0.1:0", "INTERNAL_ADDR": "127.0.0.1:0"})
	defer func() { stop(); <-result }()
	m := waitMatch(t, stdout, regexp.MustCompile(`public listener: +http://(\S+) [\s\S]*Trackunit simulator: (\S+)[\s\S]*curl -s '(http://\S+/iris/accounts/(\S+)/api/echo\?hello=world)' -H 'Authorization: Bearer (\S+)'`), result)
	public, sim, proxyURL, account, bearer := m[1], m[2], m[3], m[4], m[5]
	waitFor200(t, "http://"+public+"/readyz")
	if _, err := uuid.Parse(account); err != nil {
		t.Fatalf("printed account %q", account)
	}
	if body := post(t, sim+"/sim/send", "", `{"to":"http://`+public+`/appinstall","type":"INSTALLED","irisAppId":"@irisx/dev-app","accountId":"`+account+`"}`); !strings.Contains(body, "installed") {
		t.Fatalf("install: %s", body)
	}
	req, _ := http.NewRequest(http.MethodGet, proxyURL, nil)
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"path":"/api/echo"`) || !strings.Contains(body, `"query":"hello=world"`) ||
		!strings.Contains(body, `"subject":"0oa`) {
		t.Fatalf("proxied call: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(stderr.String(), "Bearer ") {
		t.Error("a bearer token was logged")
	}
}
