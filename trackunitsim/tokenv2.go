package trackunitsim

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// APIKeyTokenTTL is the expires_in of /token/v2: API key tokens live 1200 s.
const APIKeyTokenTTL = 1200 * time.Second

// AddAPIKey registers a Trackunit API key for POST /token/v2: its client
// credentials and the scopes a token may carry.
func (s *Sim) AddAPIKey(clientID string, secret crypto.Secret, scopes []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apiKeys[clientID] = &appClient{secret: secret, scopes: slices.Clone(scopes)}
}

// RevokeAPIKey makes /token/v2 refuse a key with invalid_client.
func (s *Sim) RevokeAPIKey(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.apiKeys[clientID]; ok {
		c.revoked = true
	}
}

// handleTokenV2 is POST /token/v2: grant client_credentials with the key's
// credentials in the form body; the requested scopes must be among the
// key's (invalid_scope otherwise); 1200 s tokens, no refresh token. Faults
// injected for EndpointTokenV2 apply as for /apptoken.
func (s *Sim) handleTokenV2(w http.ResponseWriter, r *http.Request) {
	form, clientID, rec, ok := s.clientCredentialsForm(w, r, EndpointTokenV2)
	if !ok {
		return
	}
	s.mu.Lock()
	c, ok := s.apiKeys[clientID]
	if !ok || c.revoked || clientID == "" || !equalSecret(c.secret.Reveal(), form.Get("client_secret")) {
		s.mu.Unlock()
		writeOAuthError(w, errInvalidClient.status, errInvalidClient.code, errInvalidClient.description)
		return
	}
	if form.Get("grant_type") != "client_credentials" {
		s.mu.Unlock()
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", errorDescription("unsupported_grant_type", http.StatusBadRequest))
		return
	}
	scopes := splitScopes(form.Get("scope"))
	if len(scopes) == 0 {
		scopes = slices.Clone(c.scopes)
	}
	for _, sc := range scopes {
		if !slices.Contains(c.scopes, sc) {
			s.mu.Unlock()
			writeOAuthError(w, http.StatusBadRequest, "invalid_scope", errorDescription("invalid_scope", http.StatusBadRequest))
			return
		}
	}
	tok := s.issueAccessLocked(clientID, scopes)
	// issueAccessLocked uses TokenTTL; API key tokens live 1200 s.
	at := s.access[tok]
	at.info.ExpiresAt = s.opts.Now().Add(APIKeyTokenTTL)
	s.access[tok] = at
	s.mu.Unlock()
	s.issued(EndpointTokenV2, rec, tok)
	writeJSON(w, http.StatusOK, tokenResponse{TokenType: "Bearer", ExpiresIn: int64(APIKeyTokenTTL / time.Second),
		AccessToken: tok, Scope: strings.Join(scopes, " ")})
}
