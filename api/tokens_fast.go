package api

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
)

// fastGetToken answers the commonest GetToken, a Connect-protocol unary
// call with a plain JSON body (what curl and most HTTP clients send), with
// the bytes Connect's handler would write, without building Connect's
// per-call request, response and connection objects. The bearer check has
// run before it (requireBearer). Anything else goes to Connect's handler
// untouched: another protocol, method or codec, a compressed body, a
// timeout header, a body over fastBodyMax or not in the plain form
// decodeGetTokenRequest reads, and every call when Connect interceptors
// (tracing) are configured, since they must see every call.
// TestFastGetTokenMatchesConnect holds the two to the same answers.
type fastGetToken struct {
	svc    *tokenService
	next   http.Handler // Connect's TokenService handler
	logger *slog.Logger
}

// fastBodyMax bounds the body the fast path reads; a GetToken body is a
// few hundred bytes, and a larger one goes to Connect, which reads it
// under its own 1 MiB limit.
const fastBodyMax = 4 << 10

var fastBodyPool = sync.Pool{New: func() any { b := make([]byte, 0, fastBodyMax); return &b }}

// Header values the fast path sets, shared by every answer (each slice is
// full, so an append to it copies instead of writing into it).
var (
	fastJSONContentType   = []string{"application/json"}
	fastJSONUTF8          = []string{"application/json; charset=utf-8"}
	fastAcceptCompression = []string{"gzip"}
)

func (f *fastGetToken) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !fastTakes(r) {
		f.next.ServeHTTP(w, r)
		return
	}
	bp := fastBodyPool.Get().(*[]byte)
	defer fastBodyPool.Put(bp)
	body, whole := readBounded(r.Body, (*bp)[:0], fastBodyMax)
	*bp = body[:0]
	var m brokerv1.GetTokenRequest
	if !whole || !decodeGetTokenRequest(body, &m) {
		// Connect reads the body again: what was read, then the rest.
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(bytes.Clone(body)), r.Body), r.Body}
		f.next.ServeHTTP(w, r)
		return
	}
	h := w.Header()
	// Connect advertises the compression it accepts on every answer.
	h["Accept-Encoding"] = fastAcceptCompression
	resp, err := f.svc.getToken(r.Context(), &m)
	if err != nil {
		_ = errorWriter.Write(w, r, rpcFailed(r.Context(), f.logger, brokerv1connect.TokenServiceGetTokenProcedure, err))
		return
	}
	out, ok := f.svc.encoded.encoded(resp, true)
	if !ok {
		if out, err = (protojson.MarshalOptions{}).Marshal(resp); err != nil {
			_ = errorWriter.Write(w, r, rpcFailed(r.Context(), f.logger, brokerv1connect.TokenServiceGetTokenProcedure, err))
			return
		}
	}
	// Connect answers in the request's own spelling of the codec.
	if r.Header["Content-Type"][0] == fastJSONUTF8[0] {
		h["Content-Type"] = fastJSONUTF8
	} else {
		h["Content-Type"] = fastJSONContentType
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// fastTakes reports whether r is the call fastGetToken answers itself.
func fastTakes(r *http.Request) bool {
	if r.Method != http.MethodPost || r.URL.Path != brokerv1connect.TokenServiceGetTokenProcedure || r.URL.RawQuery != "" {
		return false
	}
	h := r.Header
	if ct := h["Content-Type"]; len(ct) != 1 || (ct[0] != fastJSONContentType[0] && ct[0] != fastJSONUTF8[0]) {
		return false
	}
	if v, ok := h["Connect-Protocol-Version"]; ok && (len(v) != 1 || v[0] != "1") {
		return false
	}
	_, compressed := h["Content-Encoding"]
	_, timeout := h["Connect-Timeout-Ms"]
	return !compressed && !timeout
}

// readBounded appends r's bytes to buf until EOF (whole) or until more
// than limit bytes (not whole; what was read is returned either way). A
// read error is not whole too: Connect's handler then meets it itself.
func readBounded(r io.Reader, buf []byte, limit int) ([]byte, bool) {
	for {
		if len(buf) > limit {
			return buf, false
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, len(buf) <= limit
		}
		if err != nil {
			return buf, false
		}
	}
}
