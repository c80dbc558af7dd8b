package trackunitsim

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Endpoint names of the IRIS API stand-in, for InjectFault and Calls.
const (
	EndpointIRIS    = "iris"    // the REST routes: /api/echo, /api/blob
	EndpointGraphQL = "graphql" // POST /api/graphql/
)

// maxIRISBody is the most of a request body the stand-in reads and echoes.
const maxIRISBody = 16 << 20

// maxIRISRecorded is how many received requests IRISRequests keeps.
const maxIRISRecorded = 64

// IRISRequest is one request the IRIS stand-in received, as it arrived.
// Header includes Authorization (only IRISRequests shows it; the echoed
// answer redacts it).
type IRISRequest struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	RawPath string      `json:"rawPath,omitempty"`
	Query   string      `json:"query"`
	Host    string      `json:"host"`
	Header  http.Header `json:"headers"`
	Body    string      `json:"body"`
	// Subject is the client id (or username) the bearer token was minted
	// for; Scopes its scopes.
	Subject string   `json:"subject"`
	Scopes  []string `json:"scopes"`
}

// irisState is the stand-in's memory: what it received and the pending
// RATE_LIMITED answers.
type irisState struct {
	mu       sync.Mutex
	recorded []IRISRequest
	limited  int           // GraphQL calls still to answer RATE_LIMITED; <0: until cleared
	resetIn  time.Duration // their extensions.resetIn
}

// RateLimitGraphQL makes the next times GraphQL calls (0: every one until
// ClearRateLimit) answer HTTP 200 with a RATE_LIMITED error whose
// extensions.resetIn is resetIn, as Trackunit does when an account's
// complexity budget is spent.
func (s *Sim) RateLimitGraphQL(resetIn time.Duration, times int) {
	s.iris.mu.Lock()
	defer s.iris.mu.Unlock()
	s.iris.resetIn = resetIn
	s.iris.limited = times
	if times == 0 {
		s.iris.limited = -1
	}
}

// ClearRateLimit ends RateLimitGraphQL.
func (s *Sim) ClearRateLimit() {
	s.iris.mu.Lock()
	defer s.iris.mu.Unlock()
	s.iris.limited = 0
}

// IRISRequests returns the latest requests the IRIS stand-in accepted (a
// valid bearer token), oldest first.
func (s *Sim) IRISRequests() []IRISRequest {
	s.iris.mu.Lock()
	defer s.iris.mu.Unlock()
	return slices.Clone(s.iris.recorded)
}

// routeIRIS adds the IRIS API stand-in:
//
//	ANY  /api/echo, /api/echo/...   echoes what it received as JSON
//	GET  /api/blob?bytes=N          N bytes of "x", streamed
//	POST /api/graphql/              a GraphQL echo, or RATE_LIMITED when told
//	POST /sim/iris/rate-limit       {"resetInMs":N,"times":N}; DELETE clears
//
// Every IRIS route wants a bearer token this simulator minted.
func (s *Sim) routeIRIS(mux *http.ServeMux) {
	mux.HandleFunc("/api/echo", s.handleIRISEcho)
	mux.HandleFunc("/api/echo/", s.handleIRISEcho)
	mux.HandleFunc("GET /api/blob", s.handleIRISBlob)
	mux.HandleFunc("POST /api/graphql", s.handleGraphQL)
	mux.HandleFunc("POST /api/graphql/", s.handleGraphQL)
	mux.HandleFunc("POST /sim/iris/rate-limit", s.handleRateLimit)
	mux.HandleFunc("DELETE /sim/iris/rate-limit", func(w http.ResponseWriter, _ *http.Request) {
		s.ClearRateLimit()
		w.WriteHeader(http.StatusNoContent)
	})
}

// acceptIRIS counts the request, applies any fault, checks the bearer
// token and records the request; false means it has been answered.
func (s *Sim) acceptIRIS(w http.ResponseWriter, r *http.Request, endpoint string) (IRISRequest, bool) {
	s.count(endpoint)
	if s.applyFault(w, r, endpoint) {
		return IRISRequest{}, false
	}
	const prefix = "Bearer "
	auth := r.Header.Get("Authorization")
	info, ok := TokenInfo{}, false
	if len(auth) > len(prefix) && strings.EqualFold(auth[:len(prefix)], prefix) {
		info, ok = s.TokenInfo(auth[len(prefix):])
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="trackunit-sim"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized", "message": "missing, unknown or expired bearer token"})
		return IRISRequest{}, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxIRISBody))
	if err != nil {
		// A body cut off on its way (a proxy refusing an oversize one) is
		// never a request.
		panic(http.ErrAbortHandler)
	}
	req := IRISRequest{
		Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, Query: r.URL.RawQuery, Host: r.Host,
		Header: r.Header.Clone(), Body: string(body), Subject: info.Subject, Scopes: info.Scopes,
	}
	s.iris.mu.Lock()
	s.iris.recorded = append(s.iris.recorded, req)
	if len(s.iris.recorded) > maxIRISRecorded {
		s.iris.recorded = slices.Delete(s.iris.recorded, 0, len(s.iris.recorded)-maxIRISRecorded)
	}
	s.iris.mu.Unlock()
	return req, true
}

// echoed is a received request as the stand-in echoes it: the token redacted.
func echoed(req IRISRequest) IRISRequest {
	req.Header = req.Header.Clone()
	if req.Header.Get("Authorization") != "" {
		req.Header.Set("Authorization", "Bearer [redacted]")
	}
	return req
}

func (s *Sim) handleIRISEcho(w http.ResponseWriter, r *http.Request) {
	req, ok := s.acceptIRIS(w, r, EndpointIRIS)
	if !ok {
		return
	}
	// Headers a proxy must pass on (X-Iris-Echo) and must not (Set-Cookie,
	// and X-Iris-Hop, made hop-by-hop by Connection).
	w.Header().Set("X-Iris-Echo", "1")
	w.Header().Set("Set-Cookie", "iris_session=sim; Path=/; HttpOnly")
	w.Header().Set("Connection", "X-Iris-Hop")
	w.Header().Set("X-Iris-Hop", "1")
	writeJSON(w, http.StatusOK, echoed(req))
}

func (s *Sim) handleIRISBlob(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.acceptIRIS(w, r, EndpointIRIS); !ok {
		return
	}
	n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
	if err != nil || n < 0 || n > 4<<30 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bytes must be 0 to 4 GiB"})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	chunk := []byte(strings.Repeat("x", 32<<10))
	for n > 0 {
		k := min(n, int64(len(chunk)))
		if _, err := w.Write(chunk[:k]); err != nil {
			return
		}
		n -= k
	}
}

func (s *Sim) handleGraphQL(w http.ResponseWriter, r *http.Request) {
	req, ok := s.acceptIRIS(w, r, EndpointGraphQL)
	if !ok {
		return
	}
	s.iris.mu.Lock()
	limited, resetIn := s.iris.limited != 0, s.iris.resetIn
	if s.iris.limited > 0 {
		s.iris.limited--
	}
	s.iris.mu.Unlock()
	w.Header().Set("Set-Cookie", "iris_session=sim; Path=/; HttpOnly")
	if limited {
		writeJSON(w, http.StatusOK, map[string]any{
			"data": nil,
			"errors": []any{map[string]any{
				"message":    "Rate limit exceeded: the query complexity budget of this window is spent",
				"extensions": map[string]any{"code": "RATE_LIMITED", "resetIn": resetIn.Milliseconds()},
			}},
		})
		return
	}
	var q struct {
		Query     string          `json:"query"`
		Variables json.RawMessage `json:"variables"`
	}
	_ = json.Unmarshal([]byte(req.Body), &q)
	writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"echo": echoed(req), "query": q.Query}})
}

func (s *Sim) handleRateLimit(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ResetInMs int64 `json:"resetInMs"`
		Times     int   `json:"times"`
	}
	if !decodeControl(w, r, &req) {
		return
	}
	if req.ResetInMs < 0 || req.Times < 0 {
		controlError(w, http.StatusBadRequest, "resetInMs and times must not be negative")
		return
	}
	s.RateLimitGraphQL(time.Duration(req.ResetInMs)*time.Millisecond, req.Times)
	w.WriteHeader(http.StatusNoContent)
}
