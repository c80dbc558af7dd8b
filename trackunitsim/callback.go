package trackunitsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// IdentityHeader is the header that carries the identity JWT of a callback.
const IdentityHeader = "Trackunit-Identity"

// Event types of install callbacks.
const (
	EventInstalled   = "INSTALLED"
	EventUninstalled = "UNINSTALLED"
)

// maxCallbackResponse caps how much of a callback's answer is read.
const maxCallbackResponse = 1 << 20

// InstallEvent is the body of an install callback (tokenCallback).
type InstallEvent struct {
	Type, IrisAppID, AccountID, ClientID string
	ClientSecret                         crypto.Secret
}

// installKey identifies an install.
type installKey struct{ app, account string }

// callbackBody is the wire form of an InstallEvent; empty fields are left out
// so tests can send incomplete events.
type callbackBody struct {
	Type         string `json:"type,omitempty"`
	IrisAppID    string `json:"irisAppId,omitempty"`
	AccountID    string `json:"accountId,omitempty"`
	ClientID     string `json:"clientId,omitempty"`
	ClientSecret string `json:"clientSecret,omitempty"`
}

// SendInstall POSTs ev as JSON to the callback URL to, with the identity JWT
// in the Trackunit-Identity header ("" = SignIdentity with the event's
// accountId and irisAppId claims), and returns the answer's status and body
// (at most 1 MiB). Before sending, like Trackunit, it registers the event's
// credentials: an INSTALLED with a ClientID becomes a valid /apptoken client
// for (app, account) and revokes the install's older client; an UNINSTALLED
// revokes the install's client.
func (s *Sim) SendInstall(ctx context.Context, to string, ev InstallEvent, identity string) (status int, body []byte, err error) {
	if identity == "" {
		claims := Claims{}
		if ev.AccountID != "" {
			claims["accountId"] = ev.AccountID
		}
		if ev.IrisAppID != "" {
			claims["irisAppId"] = ev.IrisAppID
		}
		if identity, err = s.SignIdentity(claims); err != nil {
			return 0, nil, err
		}
	}
	raw, err := json.Marshal(callbackBody{
		Type:         ev.Type,
		IrisAppID:    ev.IrisAppID,
		AccountID:    ev.AccountID,
		ClientID:     ev.ClientID,
		ClientSecret: ev.ClientSecret.Reveal(),
	})
	if err != nil {
		return 0, nil, fmt.Errorf("trackunitsim: encode install event: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, to, bytes.NewReader(raw))
	if err != nil {
		return 0, nil, fmt.Errorf("trackunitsim: install callback: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(IdentityHeader, identity)

	s.registerInstall(ev)
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("trackunitsim: install callback: %w", err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxCallbackResponse))
	if err != nil {
		return resp.StatusCode, body, fmt.Errorf("trackunitsim: read callback answer: %w", err)
	}
	return resp.StatusCode, body, nil
}

// registerInstall applies an event to the /apptoken client registry.
func (s *Sim) registerInstall(ev InstallEvent) {
	key := installKey{app: ev.IrisAppID, account: ev.AccountID}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ev.Type {
	case EventInstalled:
		if ev.ClientID == "" {
			return
		}
		if old := s.installs[key]; old != "" && old != ev.ClientID {
			if c, ok := s.clients[old]; ok {
				c.revoked = true
			}
		}
		s.addClientLocked(ev.ClientID, ev.ClientSecret, nil)
		s.installs[key] = ev.ClientID
	case EventUninstalled:
		if c, ok := s.clients[s.installs[key]]; ok {
			c.revoked = true
		}
		delete(s.installs, key)
	}
}

// InstallClient returns the client id currently registered for an install.
func (s *Sim) InstallClient(irisAppID, accountID string) (clientID string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clientID, ok = s.installs[installKey{app: irisAppID, account: accountID}]
	return clientID, ok
}
