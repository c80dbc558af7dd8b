package trackunitsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// SendRequest is the body of POST /sim/send.
type SendRequest struct {
	To        string `json:"to"`
	Type      string `json:"type,omitempty"` // default INSTALLED
	IrisAppID string `json:"irisAppId"`
	AccountID string `json:"accountId"`
	// ClientID and ClientSecret are generated for an INSTALLED that leaves
	// them out.
	ClientID     string        `json:"clientId,omitempty"`
	ClientSecret crypto.Secret `json:"clientSecret,omitempty"`
}

// MarshalJSON writes the request including its client secret: the control
// API is the secret's destination.
func (r SendRequest) MarshalJSON() ([]byte, error) {
	type plain SendRequest // drops the method, avoiding recursion
	// The outer ClientSecret shadows the embedded, redacting one.
	return json.Marshal(struct {
		plain
		ClientSecret string `json:"clientSecret,omitempty"`
	}{plain(r), r.ClientSecret.Reveal()})
}

// SendResponse is the answer of POST /sim/send: the broker's status and body,
// and the client id used. The secret is never echoed.
type SendResponse struct {
	Status   int    `json:"status"`
	Body     string `json:"body"`
	ClientID string `json:"clientId,omitempty"`
}

// RotateRequest is the body of POST /sim/rotate.
type RotateRequest struct {
	Kind string `json:"kind,omitempty"` // default RS256
}

// RotateResponse is the answer of POST /sim/rotate.
type RotateResponse struct {
	KID string `json:"kid"`
}

// RevokeRequest is the body of POST /sim/revoke.
type RevokeRequest struct {
	ClientID string `json:"clientId"`
}

// UserRequest is the body of POST /sim/users: an API user for /token.
type UserRequest struct {
	Username     string        `json:"username"`
	Password     crypto.Secret `json:"password"`
	ClientID     string        `json:"clientId"`
	ClientSecret crypto.Secret `json:"clientSecret"`
}

// MarshalJSON writes the request including its secrets: the control API is
// their destination.
func (r UserRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{
		"username": r.Username, "password": r.Password.Reveal(),
		"clientId": r.ClientID, "clientSecret": r.ClientSecret.Reveal(),
	})
}

// FaultRequest is the body of POST /sim/faults: a Fault for one endpoint,
// with Latency as a Go duration string ("2s").
type FaultRequest struct {
	Endpoint   string `json:"endpoint"`
	Status     int    `json:"status,omitempty"`
	RetryAfter string `json:"retryAfter,omitempty"`
	Latency    string `json:"latency,omitempty"`
	HTMLBody   bool   `json:"htmlBody,omitempty"`
	ErrorCode  string `json:"errorCode,omitempty"`
	OktaShape  bool   `json:"oktaShape,omitempty"`
	Hang       bool   `json:"hang,omitempty"`
	Times      int    `json:"times,omitempty"`
}

// Fault validates the request and returns its Fault.
func (fr FaultRequest) Fault() (Fault, error) {
	switch fr.Endpoint {
	case EndpointAppToken, EndpointToken, EndpointJWKS, EndpointIRIS, EndpointGraphQL:
	default:
		return Fault{}, fmt.Errorf("endpoint %q: want apptoken, token, jwks, iris or graphql", fr.Endpoint)
	}
	var latency time.Duration
	if fr.Latency != "" {
		var err error
		if latency, err = time.ParseDuration(fr.Latency); err != nil || latency < 0 {
			return Fault{}, fmt.Errorf("latency %q: want a non-negative duration like 2s", fr.Latency)
		}
	}
	if fr.Status != 0 && (fr.Status < 100 || fr.Status > 599) {
		return Fault{}, fmt.Errorf("status %d out of range", fr.Status)
	}
	if fr.Times < 0 {
		return Fault{}, errors.New("times must not be negative")
	}
	return Fault{
		Status: fr.Status, RetryAfter: fr.RetryAfter, Latency: latency, HTMLBody: fr.HTMLBody,
		ErrorCode: fr.ErrorCode, OktaShape: fr.OktaShape, Hang: fr.Hang, Times: fr.Times,
	}, nil
}

// decodeControl reads a control request body into v, answering 400 itself
// on failure.
func decodeControl(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxFormBytes))
	if err := dec.Decode(v); err != nil {
		controlError(w, http.StatusBadRequest, "invalid JSON body")
		return false
	}
	return true
}

func controlError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func (s *Sim) handleSend(w http.ResponseWriter, r *http.Request) {
	var req SendRequest
	if !decodeControl(w, r, &req) {
		return
	}
	u, err := url.Parse(req.To)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		controlError(w, http.StatusBadRequest, "to must be an absolute http(s) URL")
		return
	}
	if req.IrisAppID == "" || req.AccountID == "" {
		controlError(w, http.StatusBadRequest, "irisAppId and accountId are required")
		return
	}
	ev := InstallEvent{
		Type: req.Type, IrisAppID: req.IrisAppID, AccountID: req.AccountID,
		ClientID: req.ClientID, ClientSecret: req.ClientSecret,
	}
	if ev.Type == "" {
		ev.Type = EventInstalled
	}
	if ev.Type == EventInstalled {
		id, secret := NewClientCredentials()
		if ev.ClientID == "" {
			ev.ClientID = id
		}
		if ev.ClientSecret.IsZero() {
			ev.ClientSecret = secret
		}
	}
	status, body, err := s.SendInstall(r.Context(), req.To, ev, "")
	if err != nil {
		controlError(w, http.StatusBadGateway, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, SendResponse{Status: status, Body: string(body), ClientID: ev.ClientID})
}

func (s *Sim) handleRotate(w http.ResponseWriter, r *http.Request) {
	var req RotateRequest
	if !decodeControl(w, r, &req) {
		return
	}
	if req.Kind == "" {
		req.Kind = "RS256"
	}
	kid, err := s.Rotate(req.Kind)
	if err != nil {
		controlError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, RotateResponse{KID: kid})
}

func (s *Sim) handleRevoke(w http.ResponseWriter, r *http.Request) {
	var req RevokeRequest
	if !decodeControl(w, r, &req) {
		return
	}
	if req.ClientID == "" {
		controlError(w, http.StatusBadRequest, "clientId is required")
		return
	}
	s.RevokeClient(req.ClientID)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sim) handleAddUser(w http.ResponseWriter, r *http.Request) {
	var req UserRequest
	if !decodeControl(w, r, &req) {
		return
	}
	if req.Username == "" || req.Password.IsZero() || req.ClientID == "" || req.ClientSecret.IsZero() {
		controlError(w, http.StatusBadRequest, "username, password, clientId and clientSecret are required")
		return
	}
	s.AddUser(req.Username, req.Password, req.ClientID, req.ClientSecret)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sim) handleInjectFault(w http.ResponseWriter, r *http.Request) {
	var req FaultRequest
	if !decodeControl(w, r, &req) {
		return
	}
	f, err := req.Fault()
	if err != nil {
		controlError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.InjectFault(req.Endpoint, f)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sim) handleClearFaults(w http.ResponseWriter, _ *http.Request) {
	s.ClearFaults()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sim) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}
