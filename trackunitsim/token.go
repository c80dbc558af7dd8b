package trackunitsim

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// Grant types of /token.
const (
	GrantPassword     = "password"
	GrantRefreshToken = "refresh_token"
)

// apiUser is a Trackunit API user with its own OAuth client.
type apiUser struct {
	password crypto.Secret
	clientID string
}

// refreshToken is one issued refresh token. Tokens descended from one
// password grant share a chain, so reuse of a spent one revokes them all.
type refreshToken struct {
	username, clientID string
	scopes             []string
	chain              *refreshChain
	spent              bool
	spentAt            time.Time
}

type refreshChain struct {
	revoked bool
}

// AddUser registers (or replaces) a /token API user and the OAuth client its
// requests must authenticate with (HTTP Basic).
func (s *Sim) AddUser(username string, password crypto.Secret, clientID string, clientSecret crypto.Secret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[username] = &apiUser{password: password, clientID: clientID}
	s.apiClients[clientID] = clientSecret
}

// RevokeRefreshTokens revokes every refresh token of username, as an admin
// resetting the API user would; the password grant keeps working.
func (s *Sim) RevokeRefreshTokens(username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rt := range s.refresh {
		if rt.username == username {
			rt.chain.revoked = true
		}
	}
}

// RefreshTokenUsable reports whether token would be accepted by a
// refresh_token grant now: issued, its chain not revoked, and not spent or
// still within RefreshGrace.
func (s *Sim) RefreshTokenUsable(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.refresh[token]
	return ok && !rt.chain.revoked && (!rt.spent || s.inGraceLocked(rt))
}

func (s *Sim) inGraceLocked(rt *refreshToken) bool {
	return s.opts.RefreshGrace > 0 && s.opts.Now().Before(rt.spentAt.Add(s.opts.RefreshGrace))
}

func (s *Sim) handleToken(w http.ResponseWriter, r *http.Request) {
	s.count(EndpointToken)
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	formErr := r.ParseForm()
	form := r.PostForm
	grant := form.Get("grant_type")
	s.mu.Lock()
	username := form.Get("username")
	if grant == GrantRefreshToken {
		username = ""
		if rt, ok := s.refresh[form.Get("refresh_token")]; ok {
			username = rt.username
		}
	}
	if username != "" && grant != "" {
		if s.userCall[username] == nil {
			s.userCall[username] = map[string]int{}
		}
		s.userCall[username][grant]++
	}
	s.mu.Unlock()

	if s.applyFault(w, r, EndpointToken) {
		return
	}
	if formErr != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The request body could not be parsed.")
		return
	}
	clientID, clientSecret, ok := r.BasicAuth()
	if !ok {
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "Client authentication with HTTP Basic is required.")
		return
	}
	resp, oerr := s.grantToken(clientID, clientSecret, form)
	if oerr != nil {
		writeOAuthError(w, oerr.status, oerr.code, oerr.description)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// grantToken checks a /token request and mints its tokens.
func (s *Sim) grantToken(clientID, clientSecret string, form url.Values) (tokenResponse, *oauthError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	secret, ok := s.apiClients[clientID]
	if !ok || !equalSecret(secret.Reveal(), clientSecret) {
		return tokenResponse{}, errInvalidClient
	}
	switch form.Get("grant_type") {
	case GrantPassword:
		return s.passwordGrantLocked(clientID, form)
	case GrantRefreshToken:
		return s.refreshGrantLocked(clientID, form)
	case "":
		return tokenResponse{}, badRequest("invalid_request", "The grant_type parameter is missing.")
	}
	return tokenResponse{}, badRequest("unsupported_grant_type", "")
}

func (s *Sim) passwordGrantLocked(clientID string, form url.Values) (tokenResponse, *oauthError) {
	username := form.Get("username")
	u, ok := s.users[username]
	if !ok || u.clientID != clientID || !equalSecret(u.password.Reveal(), form.Get("password")) {
		return tokenResponse{}, badRequest("invalid_grant", "")
	}
	scopes := splitScopes(form.Get("scope"))
	if !slices.Contains(scopes, "api") {
		return tokenResponse{}, badRequest("invalid_scope", "The scope 'api' is required.")
	}
	for _, sc := range scopes {
		if sc != "api" && sc != "offline_access" {
			return tokenResponse{}, badRequest("invalid_scope", "")
		}
	}
	var chain *refreshChain
	if slices.Contains(scopes, "offline_access") {
		chain = &refreshChain{}
	}
	return s.issueUserTokensLocked(username, clientID, scopes, chain), nil
}

func (s *Sim) refreshGrantLocked(clientID string, form url.Values) (tokenResponse, *oauthError) {
	rt, ok := s.refresh[form.Get("refresh_token")]
	if !ok || rt.clientID != clientID || rt.chain.revoked {
		return tokenResponse{}, badRequest("invalid_grant", "The refresh token is invalid or expired.")
	}
	if rt.spent && !s.inGraceLocked(rt) {
		// Reuse of a rotated token means it leaked (or the client lost a
		// response): revoke the whole family, as Okta does.
		s.reuse++
		rt.chain.revoked = true
		return tokenResponse{}, badRequest("invalid_grant", "The refresh token is invalid or expired.")
	}
	// A scope parameter may only repeat granted scopes; the new tokens keep
	// the original grant so the chain can go on.
	for _, sc := range splitScopes(form.Get("scope")) {
		if !slices.Contains(rt.scopes, sc) {
			return tokenResponse{}, badRequest("invalid_scope", "")
		}
	}
	if !rt.spent {
		// Within grace the first spending time stands, so retries cannot
		// stretch the window.
		rt.spent, rt.spentAt = true, s.opts.Now()
	}
	return s.issueUserTokensLocked(rt.username, clientID, rt.scopes, rt.chain), nil
}

// issueUserTokensLocked mints an access token and, when chain is non-nil, a
// refresh token in that chain.
func (s *Sim) issueUserTokensLocked(username, clientID string, scopes []string, chain *refreshChain) tokenResponse {
	resp := tokenResponse{
		TokenType:   "Bearer",
		ExpiresIn:   int64(s.opts.TokenTTL / time.Second),
		AccessToken: s.issueAccessLocked(username, scopes),
		Scope:       strings.Join(scopes, " "),
	}
	if chain != nil {
		resp.RefreshToken = randomToken(32)
		s.refresh[resp.RefreshToken] = &refreshToken{
			username: username, clientID: clientID, scopes: slices.Clone(scopes), chain: chain,
		}
	}
	return resp
}
