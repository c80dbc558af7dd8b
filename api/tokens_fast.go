package api

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net/http"
	"sync"

	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
)

// fastGetToken answers the commonest forms of GetToken with the bytes
// Connect's handler would write, without building Connect's per-call
// request, response and connection objects:
//
//   - a Connect-protocol unary call with a plain JSON body (what curl and
//     most HTTP clients send),
//   - a Connect-protocol unary call with a protobuf body (what Connect's
//     clients send by default, the client package's among them), and
//   - a gRPC call over HTTP/2 with one uncompressed protobuf message (what
//     gRPC clients send).
//
// The bearer check has run before it (requireBearer). Anything else goes to
// Connect's handler untouched: another protocol, method or codec, a
// compressed body, a time-out header, a body over fastBodyMax or not in the
// form the fast path reads, and every call when Connect interceptors
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
	fastJSON              = []string{"application/json"}
	fastJSONUTF8          = []string{"application/json; charset=utf-8"}
	fastProto             = []string{"application/proto"}
	fastGRPC              = []string{"application/grpc"}
	fastGRPCProto         = []string{"application/grpc+proto"}
	fastAcceptCompression = []string{"gzip"}
	fastGRPCOK            = []string{"0"}
)

type fastForm int

const (
	fastNone fastForm = iota
	fastConnectJSON
	fastConnectProto
	fastGRPCCall
)

func (f *fastGetToken) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	form := fastFormOf(r)
	if form == fastNone {
		f.next.ServeHTTP(w, r)
		return
	}
	bp := fastBodyPool.Get().(*[]byte)
	defer fastBodyPool.Put(bp)
	body, whole := readBounded(r.Body, (*bp)[:0], fastBodyMax)
	*bp = body[:0]
	var m brokerv1.GetTokenRequest
	if !whole || !decodeFast(form, body, &m) {
		// Connect reads the body again: what was read, then the rest.
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(bytes.Clone(body)), r.Body), r.Body}
		f.next.ServeHTTP(w, r)
		return
	}
	h := w.Header()
	// Connect answers in the request's own spelling of the content type,
	// and advertises the compression it accepts on every answer.
	ct := r.Header["Content-Type"][0]
	if form == fastGRPCCall {
		h["Grpc-Accept-Encoding"] = fastAcceptCompression
		if r.Header["Grpc-Accept-Encoding"] != nil {
			// The client accepts gzip (fastFormOf checked), so Connect
			// names it; an answer this small is sent uncompressed all the
			// same (tokenCompressMinBytes).
			h["Grpc-Encoding"] = fastAcceptCompression
		}
	} else {
		h["Accept-Encoding"] = fastAcceptCompression
	}
	resp, err := f.svc.getToken(r.Context(), &m)
	var out []byte
	if err == nil {
		out, err = encodeFast(f.svc.encoded, form, resp)
	}
	if err != nil {
		_ = errorWriter.Write(w, r, rpcFailed(r.Context(), f.logger, brokerv1connect.TokenServiceGetTokenProcedure, err))
		return
	}
	h["Content-Type"] = sharedValue(ct, fastJSON, fastJSONUTF8, fastProto, fastGRPC, fastGRPCProto)
	w.WriteHeader(http.StatusOK)
	if form != fastGRPCCall {
		_, _ = w.Write(out)
		return
	}
	var prefix [5]byte
	binary.BigEndian.PutUint32(prefix[1:], uint32(len(out)))
	_, _ = w.Write(prefix[:])
	_, _ = w.Write(out)
	h[http.TrailerPrefix+"Grpc-Status"] = fastGRPCOK
}

// sharedValue returns whichever of the shared header values is v.
func sharedValue(v string, shared ...[]string) []string {
	for _, s := range shared {
		if s[0] == v {
			return s
		}
	}
	return []string{v}
}

// fastFormOf reports which form of GetToken r is, if any.
func fastFormOf(r *http.Request) fastForm {
	if r.Method != http.MethodPost || r.URL.Path != brokerv1connect.TokenServiceGetTokenProcedure || r.URL.RawQuery != "" {
		return fastNone
	}
	h := r.Header
	ct := h["Content-Type"]
	if len(ct) != 1 {
		return fastNone
	}
	switch ct[0] {
	case fastJSON[0], fastJSONUTF8[0], fastProto[0]:
		if v, ok := h["Connect-Protocol-Version"]; ok && (len(v) != 1 || v[0] != "1") {
			return fastNone
		}
		_, compressed := h["Content-Encoding"]
		_, timeout := h["Connect-Timeout-Ms"]
		if compressed || timeout {
			return fastNone
		}
		if ct[0] == fastProto[0] {
			return fastConnectProto
		}
		return fastConnectJSON
	case fastGRPC[0], fastGRPCProto[0]:
		_, compressed := h["Grpc-Encoding"]
		_, timeout := h["Grpc-Timeout"]
		if accept, ok := h["Grpc-Accept-Encoding"]; ok && (len(accept) != 1 || accept[0] != "gzip") {
			return fastNone // Connect negotiates anything else
		}
		if compressed || timeout || r.ProtoMajor != 2 {
			return fastNone
		}
		return fastGRPCCall
	}
	return fastNone
}

// decodeFast decodes body into m, reporting false (for Connect to handle)
// for anything but the plain form: JSON that decodeGetTokenRequest reads,
// a protobuf message, or exactly one uncompressed gRPC message.
func decodeFast(form fastForm, body []byte, m *brokerv1.GetTokenRequest) bool {
	switch form {
	case fastConnectJSON:
		return decodeGetTokenRequest(body, m)
	case fastConnectProto:
		return proto.Unmarshal(body, m) == nil
	}
	if len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
		return false
	}
	return proto.Unmarshal(body[5:], m) == nil
}

// encodeFast is resp in the form's encoding: the kept bytes themselves
// when resp is a kept message (the codec would copy them), else what the
// token service's codec writes.
func encodeFast(kept *encodedTokens, form fastForm, resp *brokerv1.GetTokenResponse) ([]byte, error) {
	json := form == fastConnectJSON
	if out, ok := kept.encoded(resp, json); ok {
		return out, nil
	}
	c := cachingCodec{json: json}
	return c.Marshal(resp)
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
