package trackunitsim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// A sequence applies each fault to its Times requests (at least one), then
// the endpoint answers normally; a Raw fault answers exactly what it says,
// without the simulator's error body or rate limit headers.
func TestFaultSequenceAndRaw(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	s.AddClient("0oaQ", "sec", nil)
	form := appTokenForm("0oaQ", "sec", "asset.view")
	s.InjectFaults(EndpointAppToken,
		Fault{Status: 503, Times: 2},
		Fault{Raw: true, Status: 429, Header: map[string]string{"X-Custom": "1"}},
		Fault{Raw: true, ContentType: "text/html", Body: "<html>not a token</html>"},
	)
	type answer struct {
		Status             int
		Custom, RateLimit  string
		Error, Raw, Access string
	}
	var got []answer
	for range 5 {
		status, hdr, body := postForm(t, srv.URL, "/apptoken", form, nil)
		a := answer{Status: status, Custom: hdr.Get("X-Custom"), RateLimit: hdr.Get("X-Rate-Limit-Reset")}
		a.Error, _ = body["error"].(string)
		a.Raw, _ = body["raw"].(string)
		if tok, _ := body["access_token"].(string); tok != "" {
			a.Access = "issued"
		}
		got = append(got, a)
	}
	want := []answer{
		{Status: 503, Error: "temporarily_unavailable"},
		{Status: 503, Error: "temporarily_unavailable"},
		{Status: 429, Custom: "1"},
		{Status: 200, Raw: "<html>not a token</html>"},
		{Status: 200, Access: "issued"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}
}

// Hold handles a request at once but keeps its answer until released; the
// record shows what was sent and which token was issued.
func TestHoldKeepsAnswersAndRequestsAreRecorded(t *testing.T) {
	clock := newClock()
	s, srv := newTestSim(t, Options{Now: clock.Now, RecordRequests: true})
	s.AddClient("0oaH", "old-secret", nil)
	release := s.Hold(EndpointAppToken)
	type answer struct {
		status int
		body   map[string]any
	}
	done := make(chan answer, 1)
	go func() {
		status, _, body := postForm(t, srv.URL, "/apptoken", appTokenForm("0oaH", "old-secret", "asset.view"), nil)
		done <- answer{status, body}
	}()
	ctx := testkit.Context(t)
	for s.Calls(EndpointAppToken) < 1 || len(s.Requests(EndpointAppToken)) < 1 || s.Requests(EndpointAppToken)[0].AccessToken == "" {
		select {
		case <-ctx.Done():
			t.Fatal("the held request was not handled")
		case <-time.After(5 * time.Millisecond):
		}
	}
	// Handled with the credentials it arrived with, whatever changes now.
	s.AddClient("0oaH", "new-secret", nil)
	select {
	case <-done:
		t.Fatal("the answer was not held")
	case <-time.After(50 * time.Millisecond):
	}
	release()
	release() // again: nothing
	a := <-done
	issued := s.Requests(EndpointAppToken)[0].AccessToken
	if a.status != 200 || a.body["access_token"] != issued || !s.ValidAccessToken(issued) {
		t.Fatalf("held answer: %d %v, want the token issued at arrival", a.status, a.body["error"])
	}

	s.SetTokenTTL(time.Minute)
	status, _, body := postForm(t, srv.URL, "/apptoken", appTokenForm("0oaH", "new-secret", "asset.view"), []string{"basic-id", "basic-secret"})
	if status != 200 || body["expires_in"] != float64(60) {
		t.Errorf("after SetTokenTTL: %d, expires_in %v, want 200 and 60", status, body["expires_in"])
	}
	got := s.Requests(EndpointAppToken)
	for i := range got {
		got[i].AccessToken = strings.Repeat("x", min(len(got[i].AccessToken), 1))
	}
	want := []TokenRequest{
		{ClientID: "0oaH", ClientSecret: "old-secret", GrantType: "client_credentials", Scope: "asset.view", AccessToken: "x"},
		{ClientID: "0oaH", ClientSecret: "new-secret", GrantType: "client_credentials", Scope: "asset.view", BasicAuth: true, AccessToken: "x"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("recorded requests (-want +got):\n%s", diff)
	}
	clock.Advance(61 * time.Second)
	if !s.ValidAccessToken(issued) {
		t.Error("the hour-long token issued before SetTokenTTL expired after a minute")
	}
}

// Without RecordRequests nothing is kept.
func TestRequestsNotRecordedByDefault(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	s.AddClient("0oaN", "sec", nil)
	postForm(t, srv.URL, "/apptoken", appTokenForm("0oaN", "sec", "asset.view"), nil)
	if got := s.Requests(EndpointAppToken); len(got) != 0 {
		t.Errorf("%d requests recorded without RecordRequests", len(got))
	}
}

// DropAnswer handles the request, a refresh token is spent, and the client
// sees a broken connection instead of the answer.
func TestFaultDropAnswer(t *testing.T) {
	s, srv := newTestSim(t, Options{})
	s.AddUser("drop@example.com", "pw", "0oaU", "usec")
	grant := func(form url.Values) (int, map[string]any, error) {
		req, _ := http.NewRequestWithContext(testkit.Context(t), http.MethodPost, srv.URL+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("0oaU", "usec")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		body := map[string]any{}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body, nil
	}
	_, first, err := grant(url.Values{"grant_type": {"password"}, "username": {"drop@example.com"}, "password": {"pw"}, "scope": {"api offline_access"}})
	if err != nil {
		t.Fatal(err)
	}
	rt, _ := first["refresh_token"].(string)
	s.InjectFault(EndpointToken, Fault{DropAnswer: true, Times: 1})
	if _, _, err := grant(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}); err == nil {
		t.Fatal("the answer was not dropped")
	}
	if s.UserCalls("drop@example.com", GrantRefreshToken) != 1 || s.RefreshTokenUsable(rt) {
		t.Error("the dropped request was not handled: its refresh token is not spent")
	}
	status, _, err := grant(url.Values{"grant_type": {"password"}, "username": {"drop@example.com"}, "password": {"pw"}, "scope": {"api"}})
	if err != nil || status != 200 {
		t.Errorf("after the fault's one request: %d %v, want 200", status, err)
	}
}
