package trackunitsim

import (
	"crypto/rand"
	"crypto/subtle"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// maxFormBytes caps token request bodies.
const maxFormBytes = 64 << 10

// appClient is an /apptoken client: an install's OAuth credentials.
type appClient struct {
	secret  crypto.Secret
	scopes  []string
	revoked bool
}

// accessToken is an issued access token.
type accessToken struct {
	info TokenInfo
}

// TokenInfo describes an issued access token.
type TokenInfo struct {
	// Subject is the client id (/apptoken) or username (/token).
	Subject   string
	Scopes    []string
	ExpiresAt time.Time
}

// AppScopes returns Trackunit's published list of app scopes, the default
// of Options.AllowedScopes.
func AppScopes() []string {
	return []string{
		"account.access-management.manage", "account.alert.manage", "account.alert.view",
		"account.api-key.manage", "account.asset.manage", "account.audit-log.view",
		"account.billing.manage", "account.custom-fields.manage", "account.customer.manage",
		"account.delete", "account.event.manage", "account.event.report-issue",
		"account.group.manage", "account.manage", "account.marketplace.app.install",
		"account.service-management.network.manage", "account.service-management.network.view",
		"account.service-management.service-plan.assignment.manage",
		"account.service-management.service-plan.assignment.report",
		"account.service-management.service-plan.assignment.service-registration.register",
		"account.service-management.service-plan.assignment.service-registration.view",
		"account.service-management.service-plan.assignment.view",
		"account.service-management.service-plan.manage",
		"account.service-management.service-plan.view", "account.site.manage",
		"account.support-access.approval-flow", "account.user.manage", "account.view",
		"account.iris.app.store-secret", "asset.view", "api.iris.app.proxy.fetch",
	}
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// NewClientCredentials returns a random Okta-like client id ("0oa" and 17
// characters) and a 40-character secret, as Trackunit sends on install.
func NewClientCredentials() (clientID string, secret crypto.Secret) {
	return "0oa" + randomString(17, alnum), crypto.Secret(randomString(40, alnum+"-_"))
}

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	for i := range b {
		// The modulo bias is irrelevant for a simulator's test credentials.
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// AddClient registers (or replaces) an /apptoken client. scopes are the
// scopes it may request; nil means Options.AllowedScopes.
func (s *Sim) AddClient(clientID string, secret crypto.Secret, scopes []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addClientLocked(clientID, secret, scopes)
}

func (s *Sim) addClientLocked(clientID string, secret crypto.Secret, scopes []string) {
	if scopes == nil {
		scopes = s.opts.AllowedScopes
	}
	s.clients[clientID] = &appClient{secret: secret, scopes: slices.Clone(scopes)}
}

// RevokeClient makes /apptoken refuse a client with invalid_client, as when
// Trackunit deactivates an install's credentials.
func (s *Sim) RevokeClient(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[clientID]; ok {
		c.revoked = true
	}
}

// ValidAccessToken reports whether token was issued by /apptoken or /token
// and has not expired.
func (s *Sim) ValidAccessToken(token string) bool {
	_, ok := s.TokenInfo(token)
	return ok
}

// TokenInfo describes an issued, unexpired access token.
func (s *Sim) TokenInfo(token string) (TokenInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.access[token]
	if !ok || !s.opts.Now().Before(at.info.ExpiresAt) {
		return TokenInfo{}, false
	}
	info := at.info
	info.Scopes = slices.Clone(info.Scopes)
	return info, true
}

// minSweepAt: below this many access tokens, expired ones are not swept.
const minSweepAt = 1024

// issueAccessLocked mints an access token for subject. s.mu must be held.
func (s *Sim) issueAccessLocked(subject string, scopes []string) string {
	now := s.opts.Now()
	// Dropping expired tokens keeps a long-running dev simulator small. The
	// sweep runs once the map has doubled since the last one, so a mint
	// costs O(1) on average however many tokens are live.
	if len(s.access) >= s.sweepAt {
		for t, at := range s.access {
			if !now.Before(at.info.ExpiresAt) {
				delete(s.access, t)
			}
		}
		s.sweepAt = max(2*len(s.access), minSweepAt)
	}
	tok := randomToken(32)
	s.access[tok] = accessToken{info: TokenInfo{Subject: subject, Scopes: slices.Clone(scopes), ExpiresAt: now.Add(s.opts.TokenTTL)}}
	return tok
}

// tokenResponse is the success body of /apptoken and /token.
type tokenResponse struct {
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope"`
}

// clientCredentialsForm is the start /apptoken and /token/v2 share: count
// the call (and the client's), read the form body, record it
// (Options.RecordRequests), apply the endpoint's injected fault. Only the
// body counts: Okta ignores query parameters and, for these endpoints, a
// Basic header. ok is false when an answer (fault or unreadable body) has
// been written; rec is the request's record for issued.
func (s *Sim) clientCredentialsForm(w http.ResponseWriter, r *http.Request, endpoint string) (_ url.Values, clientID string, rec int, ok bool) {
	s.count(endpoint)
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	formErr := r.ParseForm()
	form := r.PostForm
	clientID = form.Get("client_id")
	s.mu.Lock()
	if clientID != "" {
		s.clientCall[clientID]++
	}
	rec = s.recordLocked(endpoint, r, form)
	s.mu.Unlock()
	if s.applyFault(w, r, endpoint) {
		return nil, "", rec, false
	}
	if formErr != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The request body could not be parsed.")
		return nil, "", rec, false
	}
	return form, clientID, rec, true
}

func (s *Sim) handleAppToken(w http.ResponseWriter, r *http.Request) {
	form, clientID, rec, ok := s.clientCredentialsForm(w, r, EndpointAppToken)
	if !ok {
		return
	}
	if clientID == "" || form.Get("client_secret") == "" {
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "Client credentials must be sent in the request body.")
		return
	}

	resp, oerr := s.grantAppToken(clientID, form)
	if oerr != nil {
		writeOAuthError(w, oerr.status, oerr.code, oerr.description)
		return
	}
	s.issued(EndpointAppToken, rec, resp.AccessToken)
	writeJSON(w, http.StatusOK, resp)
}

// oauthError is an RFC 6749 error answer.
type oauthError struct {
	status            int
	code, description string
}

func badRequest(code, description string) *oauthError {
	if description == "" {
		description = errorDescription(code, http.StatusBadRequest)
	}
	return &oauthError{status: http.StatusBadRequest, code: code, description: description}
}

var errInvalidClient = &oauthError{
	status:      http.StatusUnauthorized,
	code:        "invalid_client",
	description: errorDescription("invalid_client", http.StatusUnauthorized),
}

// grantAppToken checks an /apptoken request and mints its token.
func (s *Sim) grantAppToken(clientID string, form url.Values) (tokenResponse, *oauthError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[clientID]
	if !ok || c.revoked || !equalSecret(c.secret.Reveal(), form.Get("client_secret")) {
		return tokenResponse{}, errInvalidClient
	}
	switch form.Get("grant_type") {
	case "client_credentials":
	case "":
		return tokenResponse{}, badRequest("invalid_request", "The grant_type parameter is missing.")
	default:
		return tokenResponse{}, badRequest("unsupported_grant_type", "")
	}
	scopes := splitScopes(form.Get("scope"))
	if len(scopes) == 0 {
		return tokenResponse{}, badRequest("invalid_scope", "The authorization server resource does not have any configured default scopes, 'scope' must be provided.")
	}
	for _, sc := range scopes {
		if !slices.Contains(c.scopes, sc) {
			return tokenResponse{}, badRequest("invalid_scope", "")
		}
	}
	return tokenResponse{
		TokenType:   "Bearer",
		ExpiresIn:   int64(s.opts.TokenTTL / time.Second),
		AccessToken: s.issueAccessLocked(clientID, scopes),
		Scope:       strings.Join(scopes, " "),
	}, nil
}

// splitScopes splits a space-separated scope parameter, dropping duplicates
// but keeping the order.
func splitScopes(v string) []string {
	var out []string
	for _, sc := range strings.Fields(v) {
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out
}

func equalSecret(want, got string) bool {
	return subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}
