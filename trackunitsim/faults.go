package trackunitsim

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Fault is a misbehaviour injected into one endpoint. It applies before the
// endpoint's normal handling: first Hang or Latency, then, when Status (or an
// ErrorCode implying one) is set, an error answer instead of the real one.
type Fault struct {
	// Status is the HTTP status to answer (default: 401 for ErrorCode
	// invalid_client, 400 for other error codes; with neither, only the
	// latency applies and the request is then handled normally).
	Status int
	// RetryAfter is sent as the Retry-After header when non-empty.
	RetryAfter string
	// Latency delays the answer (through Options.Sleep).
	Latency time.Duration
	// HTMLBody answers an HTML error page, as a proxy in front would.
	HTMLBody bool
	// ErrorCode is the OAuth error code of the JSON body ("invalid_client",
	// "invalid_scope", "invalid_grant", ...); default derived from Status.
	ErrorCode string
	// OktaShape writes {errorCode, errorSummary, errorId} instead of
	// {error, error_description}.
	OktaShape bool
	// Hang never answers: the request is held until the client gives up or
	// the Sim closes, then the connection is dropped.
	Hang bool
	// Times is how many requests the fault applies to (0: until cleared;
	// in a sequence, once).
	Times int
	// Raw answers Status (default 200) with exactly Header, ContentType and
	// Body and nothing the simulator would add (no error body, no rate
	// limit headers): a precise answer such as a proxy's page, a token
	// response in another encoding or one without access_token.
	Raw         bool
	Header      map[string]string
	ContentType string
	Body        string
	// DropAnswer handles the request as usual (its token issued, its
	// refresh token spent) and then drops the connection without
	// answering, as when the network fails after Trackunit processed the
	// request. Token endpoints only.
	DropAnswer bool
}

// InjectFault sets the fault of an endpoint ("apptoken", "token", "jwks"),
// replacing the ones it had.
func (s *Sim) InjectFault(endpoint string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[endpoint] = []*Fault{&f}
}

// InjectFaults sets a sequence of faults for an endpoint, replacing the ones
// it had: each applies to its Times requests (at least one), in order;
// requests after the last are handled normally.
func (s *Sim) InjectFaults(endpoint string, seq ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := make([]*Fault, len(seq))
	for i, f := range seq {
		f.Times = max(f.Times, 1)
		q[i] = &f
	}
	s.faults[endpoint] = q
}

// ClearFaults removes every injected fault.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
}

// Hold makes a token endpoint ("apptoken", "token", "token_v2") hold its
// answers: a request arriving meanwhile is handled at once (its token
// issued, its fault applied) but its answer is kept until the returned
// release is called, as when the network is slow after Trackunit processed
// the request. A client that gives up meanwhile, or the Sim closing, drops
// the connection. Calling release again does nothing.
func (s *Sim) Hold(endpoint string) (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gate := make(chan struct{})
	s.holds[endpoint] = gate
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.holds[endpoint] == gate {
				delete(s.holds, endpoint)
			}
			close(gate)
		})
	}
}

// SetTokenTTL changes expires_in of the tokens /apptoken and /token issue
// from now on (Options.TokenTTL).
func (s *Sim) SetTokenTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		d = DefaultTokenTTL
	}
	s.opts.TokenTTL = d
}

// count records one request to an endpoint.
func (s *Sim) count(endpoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[endpoint]++
}

// applyFault runs the endpoint's fault, if any, and reports whether it
// answered (or dropped) the request, in which case the handler must stop.
func (s *Sim) applyFault(w http.ResponseWriter, r *http.Request, endpoint string) bool {
	s.mu.Lock()
	cur, ok := s.takeFaultLocked(endpoint, false)
	s.mu.Unlock()
	if !ok {
		return false
	}

	ctx, cancel := s.requestContext(r)
	defer cancel()
	if cur.Hang {
		<-ctx.Done()
		// ErrAbortHandler drops the connection instead of letting net/http
		// send an empty 200 when the handler returns.
		panic(http.ErrAbortHandler)
	}
	if cur.Latency > 0 {
		if err := s.opts.Sleep(ctx, cur.Latency); err != nil {
			panic(http.ErrAbortHandler)
		}
	}
	if cur.Raw {
		writeRaw(w, cur)
		return true
	}
	status := cur.Status
	if status == 0 && cur.ErrorCode != "" {
		status = http.StatusBadRequest
		if cur.ErrorCode == "invalid_client" {
			status = http.StatusUnauthorized
		}
	}
	if status == 0 {
		return false
	}
	s.writeFault(w, status, cur)
	return true
}

// takeFaultLocked returns the endpoint's current fault, counting the
// request against its Times, if it is a DropAnswer fault or not as drop
// says. s.mu must be held.
func (s *Sim) takeFaultLocked(endpoint string, drop bool) (Fault, bool) {
	q := s.faults[endpoint]
	if len(q) == 0 || q[0].DropAnswer != drop {
		return Fault{}, false
	}
	f := q[0]
	cur := *f
	if f.Times > 0 {
		f.Times--
		if f.Times == 0 {
			if q = q[1:]; len(q) == 0 {
				delete(s.faults, endpoint)
			} else {
				s.faults[endpoint] = q
			}
		}
	}
	return cur, true
}

// held runs h for a token endpoint, holding its answer while the endpoint
// is held and dropping it for a DropAnswer fault.
func (s *Sim) held(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		gate := s.holds[endpoint]
		_, drop := s.takeFaultLocked(endpoint, true)
		s.mu.Unlock()
		if gate == nil && !drop {
			h(w, r)
			return
		}
		kept := &keptAnswer{header: http.Header{}}
		h(kept, r)
		if drop {
			panic(http.ErrAbortHandler)
		}
		ctx, cancel := s.requestContext(r)
		defer cancel()
		select {
		case <-gate:
		case <-ctx.Done():
			panic(http.ErrAbortHandler)
		}
		for k, v := range kept.header {
			w.Header()[k] = v
		}
		w.WriteHeader(cmp.Or(kept.status, http.StatusOK))
		_, _ = w.Write(kept.body.Bytes())
	}
}

// keptAnswer is an answer held back by Hold.
type keptAnswer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (k *keptAnswer) Header() http.Header { return k.header }
func (k *keptAnswer) WriteHeader(status int) {
	if k.status == 0 {
		k.status = status
	}
}
func (k *keptAnswer) Write(p []byte) (int, error) {
	k.WriteHeader(http.StatusOK)
	return k.body.Write(p)
}

// writeRaw answers exactly what a Raw fault says.
func writeRaw(w http.ResponseWriter, f Fault) {
	for k, v := range f.Header {
		w.Header().Set(k, v)
	}
	if f.ContentType != "" {
		w.Header().Set("Content-Type", f.ContentType)
	}
	status := f.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(f.Body))
}

// writeFault answers status with the fault's headers and body.
func (s *Sim) writeFault(w http.ResponseWriter, status int, f Fault) {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if status == http.StatusTooManyRequests {
		// Okta's rate limit headers; Reset is a Unix time.
		wait, _ := strconv.Atoi(f.RetryAfter)
		w.Header().Set("X-Rate-Limit-Limit", "600")
		w.Header().Set("X-Rate-Limit-Remaining", "0")
		w.Header().Set("X-Rate-Limit-Reset", strconv.FormatInt(s.opts.Now().Add(time.Duration(wait)*time.Second).Unix(), 10))
	}
	if f.HTMLBody {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		text := fmt.Sprintf("%d %s", status, http.StatusText(status))
		_, _ = fmt.Fprintf(w, "<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<center><h1>%s</h1></center>\r\n</body>\r\n</html>\r\n", text, text)
		return
	}
	code := f.ErrorCode
	if code == "" {
		code = defaultErrorCode(status, f.OktaShape)
	}
	if f.OktaShape {
		writeJSON(w, status, map[string]any{
			"errorCode":    code,
			"errorSummary": errorDescription(code, status),
			"errorLink":    code,
			"errorId":      "oae" + randomToken(16),
			"errorCauses":  []any{},
		})
		return
	}
	writeOAuthError(w, status, code, errorDescription(code, status))
}

// defaultErrorCode is the error code of a fault that names none.
func defaultErrorCode(status int, okta bool) string {
	switch {
	case status == http.StatusTooManyRequests && okta:
		return "E0000047" // Okta's rate limit error code
	case status == http.StatusUnauthorized:
		return "invalid_client"
	case status == http.StatusInternalServerError:
		return "server_error"
	case status == http.StatusTooManyRequests, status >= 500:
		return "temporarily_unavailable"
	}
	return "invalid_request"
}

// errorDescription is an Okta-like description of an error code.
func errorDescription(code string, status int) string {
	switch code {
	case "invalid_client":
		return "Client authentication failed. Either the client or the client credentials are invalid."
	case "invalid_scope":
		return "One or more scopes are not configured for the authorization server resource."
	case "invalid_grant":
		return "The credentials provided were invalid."
	case "unsupported_grant_type":
		return "The authorization grant type is not supported by the authorization server."
	case "E0000047":
		return "API call exceeded rate limit due to too many requests."
	}
	return http.StatusText(status)
}

// writeOAuthError answers an RFC 6749 error body.
func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="trackunit-sim"`)
	}
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

// writeJSON answers v as JSON with the given status; token responses must not
// be cached.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
