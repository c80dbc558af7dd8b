package trackunitsim

import (
	"net/http"
	"net/url"
	"slices"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// MaxRecordedRequests bounds what Options.RecordRequests keeps per endpoint.
const MaxRecordedRequests = 10_000

// TokenRequest is one client-credentials request as the simulator received
// it, and the access token it answered with.
type TokenRequest struct {
	ClientID     string
	ClientSecret crypto.Secret // as sent in the form body
	GrantType    string
	Scope        string
	// BasicAuth reports an Authorization header, where these endpoints
	// ignore credentials.
	BasicAuth bool
	// AccessToken is the token issued, empty when the request was refused,
	// faulted or is still being answered.
	AccessToken string
}

// Requests returns the endpoint's recorded requests in arrival order
// (Options.RecordRequests).
func (s *Sim) Requests(endpoint string) []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests[endpoint])
}

// record keeps a request as it arrives; it returns its index, or -1 when
// nothing is recorded. s.mu must be held.
func (s *Sim) recordLocked(endpoint string, r *http.Request, form url.Values) int {
	if !s.opts.RecordRequests || len(s.requests[endpoint]) >= MaxRecordedRequests {
		return -1
	}
	s.requests[endpoint] = append(s.requests[endpoint], TokenRequest{
		ClientID: form.Get("client_id"), ClientSecret: crypto.Secret(form.Get("client_secret")),
		GrantType: form.Get("grant_type"), Scope: form.Get("scope"), BasicAuth: r.Header.Get("Authorization") != "",
	})
	return len(s.requests[endpoint]) - 1
}

// issued notes the token answered to the request recorded at i.
func (s *Sim) issued(endpoint string, i int, token string) {
	if i < 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[endpoint][i].AccessToken = token
}
