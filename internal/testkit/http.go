package testkit

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// Bearer is the header that presents token as a bearer token; none for "".
func Bearer(token string) http.Header {
	if token == "" {
		return nil
	}
	return http.Header{"Authorization": {"Bearer " + token}}
}

// PostJSON POSTs body as application/json to url with the extra headers
// (nil for none) and returns the status and the answer. The request is
// bounded by Context; a transport failure fails the test.
func PostJSON(t testing.TB, url, body string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(Context(t), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the answer of %s: %v", url, err)
	}
	return resp.StatusCode, string(raw)
}
