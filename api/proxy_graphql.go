package api

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"time"
)

// Bounds on a RATE_LIMITED answer's resetIn: a missing or unusable value
// holds for defaultResetIn (Trackunit's windows are ten minutes long; one
// minute errs on the side of trying again), a huge one no longer than
// maxResetIn.
const (
	defaultResetIn = time.Minute
	maxResetIn     = time.Hour
)

// watchGraphQL reads a bounded GraphQL JSON answer for an error with
// extensions.code RATE_LIMITED and, on one, holds the install's GraphQL
// calls until extensions.resetIn (ms) has passed, on every replica. The
// answer itself goes on to the caller unchanged; an answer too large to
// peek at streams through unread.
func (p *proxy) watchGraphQL(resp *http.Response, call *proxyCall) {
	if resp.ContentLength > maxGraphQLPeek || !isJSONType(resp.Header.Get("Content-Type")) {
		return
	}
	orig := resp.Body
	buf, err := io.ReadAll(io.LimitReader(orig, maxGraphQLPeek+1))
	switch {
	case err != nil:
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(buf), errReader{err}), orig}
		return
	case len(buf) > maxGraphQLPeek:
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(buf), orig), orig}
		return
	}
	resp.Body = readCloser{bytes.NewReader(buf), orig}
	doc := buf
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(buf))
		if err != nil {
			return
		}
		if doc, err = io.ReadAll(io.LimitReader(zr, maxGraphQLPeek)); err != nil {
			return
		}
	}
	resetIn, ok := rateLimited(doc)
	if !ok {
		return
	}
	ctx := resp.Request.Context()
	p.holds.hold(ctx, call.app, call.target.account, p.now().Add(resetIn))
	p.logger.InfoContext(ctx, "proxy: Trackunit's GraphQL budget is spent; holding the account's GraphQL calls",
		"reset_in", resetIn.String())
}

// rateLimited finds a RATE_LIMITED error in a GraphQL answer and its resetIn.
func rateLimited(doc []byte) (time.Duration, bool) {
	if !bytes.Contains(doc, []byte("RATE_LIMITED")) {
		return 0, false // the common case costs one scan, no decoding
	}
	var body struct {
		Errors []struct {
			Extensions struct {
				Code    string   `json:"code"`
				ResetIn *float64 `json:"resetIn"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	if json.Unmarshal(doc, &body) != nil {
		return 0, false
	}
	for _, e := range body.Errors {
		if e.Extensions.Code != "RATE_LIMITED" {
			continue
		}
		if e.Extensions.ResetIn == nil || *e.Extensions.ResetIn <= 0 {
			return defaultResetIn, true
		}
		ms := *e.Extensions.ResetIn
		if ms > float64(maxResetIn/time.Millisecond) {
			return maxResetIn, true
		}
		return time.Duration(ms * float64(time.Millisecond)), true
	}
	return 0, false
}

func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "application/graphql-response+json"
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
