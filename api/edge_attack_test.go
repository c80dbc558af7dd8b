package api_test

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/api"
)

// countingReader counts the bytes a handler reads of a request body.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// repeatReader yields n copies of b without holding them.
func repeatReader(b byte, n int64) io.Reader {
	return io.LimitReader(byteRepeater(b), n)
}

type byteRepeater byte

func (b byteRepeater) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// gzipBomb is a GetToken request of mib MiB of spaces, gzipped: 384 MiB
// compress to about 380 KiB.
func gzipBomb(t *testing.T, mib int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = w.Write([]byte(`{"accountId":"`))
	chunk := bytes.Repeat([]byte{' '}, 1<<20)
	for range mib {
		_, _ = w.Write(chunk)
	}
	_, _ = w.Write([]byte(`"}`))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// envelope frames msg as one gRPC / gRPC-Web message; declared overrides
// the length prefix when non-zero.
func envelope(msg []byte, compressed bool, declared uint32) []byte {
	head := make([]byte, 5)
	if compressed {
		head[0] = 1
	}
	if declared == 0 {
		declared = uint32(len(msg))
	}
	binary.BigEndian.PutUint32(head[1:], declared)
	return append(head, msg...)
}

type edgeResult struct {
	status     int
	code       string // Connect error code, or the grpc-status number
	bodyRead   int64
	inflated   int64
	headerDump string
}

// serveEdge runs one request through the real internal handler, counting
// the body bytes it reads and the bytes it inflates.
func serveEdge(h *harness, req *http.Request, body io.Reader) edgeResult {
	cr := &countingReader{r: body}
	req.Body = io.NopCloser(cr)
	before := api.InflatedBytes()
	rec := httptest.NewRecorder()
	h.internal.Handler.ServeHTTP(rec, req)
	res := rec.Result()
	raw, _ := io.ReadAll(res.Body)
	out := edgeResult{status: res.StatusCode, bodyRead: cr.n.Load(), inflated: api.InflatedBytes() - before}
	if s := res.Trailer.Get("Grpc-Status"); s != "" {
		out.code = "grpc-" + s
	} else if s := res.Header.Get("Grpc-Status"); s != "" {
		out.code = "grpc-" + s
	} else if ct := res.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/grpc-web") {
		// gRPC-Web puts its trailers in a final frame of the body.
		if i := bytes.Index(raw, []byte("grpc-status:")); i >= 0 {
			rest := string(raw[i+len("grpc-status:"):])
			out.code = "grpc-" + strings.TrimSpace(strings.SplitN(rest, "\r\n", 2)[0])
		}
	} else {
		var e struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal(raw, &e)
		out.code = e.Code
	}
	out.headerDump = res.Status + " " + string(raw[:min(len(raw), 200)])
	return out
}

// TestEdgeAttacks sends what an outsider (or a careless insider) could, and
// checks each answer's status and what it cost: body bytes read and bytes
// inflated.
func TestEdgeAttacks(t *testing.T) {
	h := newHarness(t, harnessOptions{allowedApps: []string{"@acme/app"}})
	bomb := gzipBomb(t, 384)
	if len(bomb) > 400<<10 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	const getToken = "/irisx.broker.v1.TokenService/GetToken"
	const (
		kib = 1 << 10
		mib = 1 << 20
	)
	type tc struct {
		name        string
		contentType string
		headers     map[string]string
		token       string
		body        func() (io.Reader, int64)
		wantStatus  int
		wantCode    string
		maxRead     int64
		maxInflated int64
		// minInflated, when set, proves the bounded decompressor ran.
		minInflated int64
	}
	bytesOf := func(b []byte) func() (io.Reader, int64) {
		return func() (io.Reader, int64) { return bytes.NewReader(b), int64(len(b)) }
	}
	bigJSON := append(append([]byte(`{"accountId":"`), bytes.Repeat([]byte{'a'}, 8*mib)...), '"', '}')
	cases := []tc{
		{name: "gzip bomb, no token", contentType: "application/json", headers: map[string]string{"Content-Encoding": "gzip"},
			body: bytesOf(bomb), wantStatus: 401, wantCode: "unauthenticated", maxRead: 4 * kib},
		{name: "gzip bomb, wrong token", contentType: "application/json", headers: map[string]string{"Content-Encoding": "gzip"},
			token: "not-a-token", body: bytesOf(bomb), wantStatus: 401, wantCode: "unauthenticated", maxRead: 4 * kib},
		{name: "gzip bomb, admin token on TokenService", contentType: "application/json", headers: map[string]string{"Content-Encoding": "gzip"},
			token: adminToken, body: bytesOf(bomb), wantStatus: 401, wantCode: "unauthenticated", maxRead: 4 * kib},
		{name: "gzip bomb, valid token", contentType: "application/json", headers: map[string]string{"Content-Encoding": "gzip"},
			token: internalToken, body: bytesOf(bomb), wantStatus: 429, wantCode: "resource_exhausted",
			maxRead: int64(len(bomb)), maxInflated: mib + 64*kib, minInflated: mib},
		{name: "8 MiB JSON, valid token", contentType: "application/json", token: internalToken,
			body: bytesOf(bigJSON), wantStatus: 429, wantCode: "resource_exhausted", maxRead: 2*mib + 64*kib},
		{name: "100 MB plain body, no token", contentType: "text/plain",
			body:       func() (io.Reader, int64) { return repeatReader('x', 100_000_000), 100_000_000 },
			wantStatus: 401, wantCode: "unauthenticated", maxRead: 0},
		{name: "100 MB JSON, no token", contentType: "application/json",
			body:       func() (io.Reader, int64) { return repeatReader('{', 100_000_000), 100_000_000 },
			wantStatus: 401, wantCode: "unauthenticated", maxRead: 0},
		{name: "malformed body, no token", contentType: "application/json", body: bytesOf([]byte(`{"accountId":`)),
			wantStatus: 401, wantCode: "unauthenticated", maxRead: 0},
		{name: "malformed gzip, no token", contentType: "application/json", headers: map[string]string{"Content-Encoding": "gzip"},
			body: bytesOf([]byte("not gzip at all")), wantStatus: 401, wantCode: "unauthenticated", maxRead: 0},
		{name: "gRPC frame declaring 8 MiB, no token", contentType: "application/grpc+proto",
			body: bytesOf(envelope([]byte{1, 2, 3}, false, 8*mib)), wantStatus: 200, wantCode: "grpc-16", maxRead: 0},
		{name: "gRPC frame declaring 8 MiB, valid token", contentType: "application/grpc+proto", token: internalToken,
			body: bytesOf(envelope(nil, false, 8*mib)), wantStatus: 200, wantCode: "grpc-8", maxRead: 64 * kib},
		{name: "gRPC 8 MiB frame, valid token", contentType: "application/grpc+proto", token: internalToken,
			body: bytesOf(envelope(bytes.Repeat([]byte{0}, 8*mib), false, 0)), wantStatus: 200, wantCode: "grpc-8", maxRead: 2*mib + 64*kib},
		{name: "gRPC gzip bomb frame, valid token", contentType: "application/grpc+proto", token: internalToken,
			headers: map[string]string{"Grpc-Encoding": "gzip"},
			body:    bytesOf(envelope(bomb, true, 0)), wantStatus: 200, wantCode: "grpc-8",
			maxRead: int64(len(bomb)) + 5, maxInflated: mib + 64*kib, minInflated: mib},
		{name: "gRPC-Web frame declaring 8 MiB, no token", contentType: "application/grpc-web+proto",
			body: bytesOf(envelope(nil, false, 8*mib)), wantStatus: 200, wantCode: "grpc-16", maxRead: 0},
		{name: "gRPC-Web 8 MiB frame, valid token", contentType: "application/grpc-web+proto", token: internalToken,
			body: bytesOf(envelope(bytes.Repeat([]byte{0}, 8*mib), false, 0)), wantStatus: 200, wantCode: "grpc-8", maxRead: 2*mib + 64*kib},
		{name: "gRPC-Web gzip bomb frame, valid token", contentType: "application/grpc-web+proto", token: internalToken,
			headers: map[string]string{"Grpc-Encoding": "gzip"},
			body:    bytesOf(envelope(bomb, true, 0)), wantStatus: 200, wantCode: "grpc-8",
			maxRead: int64(len(bomb)) + 5, maxInflated: mib + 64*kib, minInflated: mib},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body, size := c.body()
			req := httptest.NewRequest(http.MethodPost, getToken, nil)
			req.ContentLength = size
			req.ProtoMajor, req.ProtoMinor, req.Proto = 2, 0, "HTTP/2.0"
			req.Header.Set("Content-Type", c.contentType)
			for k, v := range c.headers {
				req.Header.Set(k, v)
			}
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			got := serveEdge(h, req, body)
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			// Whatever the request, the heap it costs stays far below the
			// 384 MiB an unbounded inflation would allocate.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 48*mib {
				t.Errorf("the request allocated %d MiB", alloc/mib)
			}
			if got.status != c.wantStatus || got.code != c.wantCode {
				t.Errorf("answer %d %q, want %d %q (%s)", got.status, got.code, c.wantStatus, c.wantCode, got.headerDump)
			}
			if got.bodyRead > c.maxRead {
				t.Errorf("read %d body bytes, want at most %d", got.bodyRead, c.maxRead)
			}
			if got.inflated > c.maxInflated || got.inflated < c.minInflated {
				t.Errorf("inflated %d bytes, want %d to %d", got.inflated, c.minInflated, c.maxInflated)
			}
		})
	}
}

// The same bounds hold over a real h2c connection to the server NewServer
// builds, as gRPC clients reach the internal listener.
func TestEdgeAttacksOverH2C(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(h.internal.Handler, true)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 30 * time.Second}
	bomb := envelope(gzipBomb(t, 384), true, 0)
	for _, c := range []struct {
		name, token, want string
	}{
		{"no token", "", "16"},
		{"valid token", internalToken, "8"},
	} {
		before := api.InflatedBytes()
		req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/irisx.broker.v1.TokenService/GetToken", bytes.NewReader(bomb))
		req.Header.Set("Content-Type", "application/grpc+proto")
		req.Header.Set("Grpc-Encoding", "gzip")
		req.Header.Set("Te", "trailers")
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status := resp.Trailer.Get("Grpc-Status")
		if status == "" {
			status = resp.Header.Get("Grpc-Status")
		}
		if resp.ProtoMajor != 2 || status != c.want {
			t.Errorf("%s: %s grpc-status %q, want HTTP/2 and %s", c.name, resp.Proto, status, c.want)
		}
		if n := api.InflatedBytes() - before; n > 1<<20+64<<10 {
			t.Errorf("%s: inflated %d bytes", c.name, n)
		}
	}
}
