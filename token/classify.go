package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

type errKind int

const (
	kindTransient    errKind = iota // retried, then ErrUnavailable
	kindRejected                    // ErrCredentialsRejected, install marked
	kindInvalidScope                // ErrInvalidScope
	kindPermanent                   // ErrUnavailable at once
)

// upstreamError is one failed attempt, reduced to what may be shown: the
// HTTP status, the OAuth error code and a scrubbed description, never the
// response body.
type upstreamError struct {
	kind          errKind
	outcome       string // Observer label
	status        int
	code, desc    string
	retryAfter    time.Duration
	hasRetryAfter bool
	attempts      int
	// lost: the answer was lost twice after Trackunit may have processed
	// the request (exchange with retryLost).
	lost bool
}

// scrub removes what was sent (credentials, tokens) from the upstream's
// code and description, which may quote it.
func (e *upstreamError) scrub(secrets ...string) {
	e.desc, e.code = scrub(e.desc, secrets...), scrub(e.code, secrets...)
}

func (e *upstreamError) summary() string {
	var sb strings.Builder
	switch {
	case e.status != 0:
		fmt.Fprintf(&sb, "token endpoint answered HTTP %d", e.status)
	default:
		sb.WriteString("token endpoint " + strings.ReplaceAll(e.outcome, "_", " "))
	}
	if e.code != "" {
		fmt.Fprintf(&sb, " %s", e.code)
	}
	if e.desc != "" {
		fmt.Fprintf(&sb, ": %s", e.desc)
	}
	if e.attempts > 1 {
		fmt.Fprintf(&sb, " (after %d attempts)", e.attempts)
	}
	return sb.String()
}

// oktaError is Okta's own error body shape.
type oktaError struct {
	ErrorCode    string `json:"errorCode"`
	ErrorSummary string `json:"errorSummary"`
}

// classify turns an error from clientcredentials.Config.Token into an
// upstreamError. now is when the request was sent, for Retry-After dates.
func classify(ctx context.Context, err error, now time.Time) *upstreamError {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		// Transport failures. Only the innermost cause is kept for
		// operators (connection refused, no such host); it holds no
		// credentials, which travel in the request body.
		detail := err.Error()
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			detail = ue.Err.Error()
		}
		var ne net.Error
		switch {
		case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
			return &upstreamError{kind: kindTransient, outcome: "timeout", desc: detail}
		case strings.HasPrefix(err.Error(), "oauth2: cannot parse") || strings.HasPrefix(err.Error(), "oauth2: server response missing"):
			// A 2xx whose body is not a token (an HTML page from a proxy).
			// x/oauth2 has no error type for this, only these messages.
			return &upstreamError{kind: kindTransient, outcome: "bad_response", status: http.StatusOK, desc: "response is not a token"}
		default:
			return &upstreamError{kind: kindTransient, outcome: "network_error", desc: detail}
		}
	}

	e := &upstreamError{code: re.ErrorCode, desc: re.ErrorDescription}
	if re.Response != nil {
		e.status = re.Response.StatusCode
		e.retryAfter, e.hasRetryAfter = retryAfter(re.Response.Header, now)
	}
	if e.code == "" {
		var ok oktaError
		if json.Unmarshal(re.Body, &ok) == nil && ok.ErrorCode != "" {
			e.code, e.desc = ok.ErrorCode, ok.ErrorSummary
		}
	}
	if !validCode(e.code) {
		// Not an error code but free text: treat it as no OAuth error.
		e.code, e.desc = "", ""
	}

	switch {
	case e.code == "invalid_client" || e.status == http.StatusUnauthorized:
		e.kind, e.outcome = kindRejected, "invalid_client"
	case e.code == "invalid_scope":
		e.kind, e.outcome = kindInvalidScope, "invalid_scope"
	case e.status == http.StatusTooManyRequests:
		e.kind, e.outcome = kindTransient, "rate_limited"
	case e.status >= 500 || e.status == http.StatusRequestTimeout || e.code == "temporarily_unavailable":
		e.kind, e.outcome = kindTransient, "server_error"
	case e.code != "":
		e.kind, e.outcome = kindPermanent, "client_error"
	default:
		// An error status without an OAuth error body: an error page from
		// something in front of the token endpoint.
		e.kind, e.outcome = kindTransient, "bad_response"
		e.desc = ""
	}
	return e
}

// retryAfter reads Retry-After (delay-seconds or HTTP-date) or, failing
// that, Okta's X-Rate-Limit-Reset (Unix seconds).
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return clampSeconds(n), true
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(t.Sub(now), 0), true
		}
	}
	if v := strings.TrimSpace(h.Get("X-Rate-Limit-Reset")); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			if n > now.Unix()+1<<20 {
				return clampSeconds(1 << 20), true
			}
			return max(time.Unix(n, 0).Sub(now), 0), true
		}
	}
	return 0, false
}

// clampSeconds converts without overflow; the caller caps the result.
func clampSeconds(n int64) time.Duration {
	return time.Duration(min(max(n, 0), 1<<20)) * time.Second
}

// validCode accepts what OAuth and Okta error codes look like
// (invalid_client, E0000047), nothing that could carry free text.
func validCode(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
