package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/outbound"
)

// Limits of the IRIS API proxy.
const (
	// maxProxyBody is the largest request body forwarded (10 MiB).
	maxProxyBody = 10 << 20
	// maxRetryBody is the largest request body kept for a retry after an
	// upstream 401 (1 MiB); a larger one streams and its 401 is passed on.
	maxRetryBody = 1 << 20
	// maxGraphQLPeek is the largest GraphQL answer read for a RATE_LIMITED
	// error; a larger one streams through unread.
	maxGraphQLPeek = 1 << 20
)

// ProxyTokens is what the proxy needs from the token core.
type ProxyTokens interface {
	// Token returns a bearer token for the install, minting when needed.
	// No scopes means DEFAULT_SCOPES. Errors wrap the token sentinels (or
	// the derrors classes).
	Token(ctx context.Context, app, account string, scopes []string) (crypto.Secret, error)
	// Forget reports that upstream refused rejected (a 401): the next Token
	// for the key must not return it again, on this replica or any other,
	// but mint a new one. A token other than rejected that is cached by
	// then (another caller's fresh mint) may be kept.
	Forget(ctx context.Context, app, account string, scopes []string, rejected crypto.Secret)
}

// ProxyObserver counts proxied requests by method and status only.
type ProxyObserver interface {
	ProxyRequest(method string, status int, d time.Duration)
}

// ProxyDeps are what the IRIS API proxy needs besides the internal
// listener's tokens, allowed apps and logger.
type ProxyDeps struct {
	Tokens ProxyTokens
	// Holds keeps GraphQL rate-limit holds fleet-wide (*store.Store); nil
	// keeps them per process.
	Holds RateLimitStore
	// UpstreamURL is IRIS_API_URL, the only upstream.
	UpstreamURL string
	// Transport replaces the default transport to the upstream (tests).
	Transport http.RoundTripper
	// Now is the clock of the holds (default time.Now).
	Now      func() time.Time
	Observer ProxyObserver // optional
}

// proxy is the IRIS API proxy:
// ANY /iris/accounts/{accountId}/{path...} -> {IRIS_API_URL}/{path...}.
type proxy struct {
	tokens   ProxyTokens
	auth     tokenSet
	allowed  []string
	upstream *url.URL
	holds    *holds
	now      func() time.Time
	obs      ProxyObserver
	logger   *slog.Logger
	rp       *httputil.ReverseProxy
	send     func(*http.Request) (*http.Response, error)
}

func newProxy(d ProxyDeps, internalTokens []crypto.Secret, allowed []string, logger *slog.Logger) (*proxy, error) {
	u, err := url.Parse(strings.TrimRight(d.UpstreamURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("api: the IRIS API URL must be an absolute http(s) URL without query")
	}
	if d.Tokens == nil {
		return nil, errors.New("api: the IRIS API proxy needs a token source")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	p := &proxy{
		tokens: d.Tokens, auth: newTokenSet(internalTokens), allowed: allowed, upstream: u,
		holds: newHolds(d.Holds, d.Now, logger), now: d.Now, obs: d.Observer, logger: logger,
	}
	p.send = newProxyClient(d.Transport).Do
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      roundTripFunc(p.roundTrip),
		FlushInterval:  -1, // stream: every write reaches the caller at once
		BufferPool:     proxyBuffers{},
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.upstreamError,
	}
	return p, nil
}

// mountProxy routes the IRIS API proxy. The configuration has already
// checked IRIS_API_URL, so a bad one here is a programming error.
func mountProxy(e *echo.Echo, d ProxyDeps, internalTokens []crypto.Secret, allowed []string, logger *slog.Logger) {
	p, err := newProxy(d, internalTokens, allowed, logger)
	if err != nil {
		panic(err)
	}
	e.Any("/iris/accounts/:accountId/*", p.handle)
}

// newProxyClient is the outbound client to IRIS_API_URL: no redirects
// followed (a 3xx is the caller's answer), bounded connects and waits for
// the answer's headers, and no whole-exchange time-out, which would cut a
// long download or upload in the middle.
func newProxyClient(rt http.RoundTripper) *http.Client {
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = 60 * time.Second
		t.TLSHandshakeTimeout = 10 * time.Second
		t.ExpectContinueTimeout = time.Second
		t.IdleConnTimeout = 90 * time.Second
		t.MaxConnsPerHost = 512
		t.MaxIdleConnsPerHost = 256
		rt = t
	}
	c := outbound.New(outbound.Options{Transport: rt})
	c.Timeout = 0
	return c
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// proxyCall is one proxied request's state, carried in its context from
// the handler to the rewrite, transport and response hooks.
type proxyCall struct {
	target  proxyTarget
	app     string
	scopes  []string
	token   crypto.Secret
	body    []byte // the whole body when it may be resent; nil otherwise
	bounded *boundedBody
}

type proxyCallKey struct{}

func callOf(r *http.Request) *proxyCall {
	c, _ := r.Context().Value(proxyCallKey{}).(*proxyCall)
	return c
}

// handle is the Echo handler. Everything the caller gets wrong is answered
// before a token is minted: the internal bearer token first, from the
// headers alone, then the path, the body size and any GraphQL hold.
func (p *proxy) handle(c echo.Context) error {
	start := time.Now()
	if err := p.serve(c); err != nil {
		c.Error(err)
	}
	if p.obs != nil {
		p.obs.ProxyRequest(c.Request().Method, c.Response().Status, time.Since(start))
	}
	return nil
}

func (p *proxy) serve(c echo.Context) error {
	r := c.Request()
	if !p.auth.contains(bearer(r.Header.Get("Authorization"))) {
		c.Response().Header().Set("WWW-Authenticate", "Bearer")
		return newError(http.StatusUnauthorized, "unauthenticated", "missing or wrong bearer token", nil)
	}
	target, err := parseProxyTarget(r)
	if err != nil {
		return newError(http.StatusBadRequest, codeInvalidRequest, err.Error(), nil)
	}
	app, err := proxyApp(r.Header, p.allowed)
	if err != nil {
		return newError(http.StatusBadRequest, codeInvalidRequest, err.Error(), nil)
	}
	if r.ContentLength > maxProxyBody {
		return newError(http.StatusRequestEntityTooLarge, codePayloadTooLarge, "request body over 10 MiB", nil)
	}
	ctx := r.Context()
	if target.graphql {
		if until, held := p.holds.until(ctx, app, target.account); held {
			secs := int64(math.Ceil(until.Sub(p.now()).Seconds()))
			c.Response().Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
			return newError(http.StatusTooManyRequests, "rate_limited",
				"Trackunit's GraphQL budget for this account is spent; retry after the Retry-After seconds", nil)
		}
	}
	// A proxied exchange may stream for longer than the listener's time-outs
	// allow other calls; the caller is authenticated by now.
	rc := http.NewResponseController(c.Response())
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})

	call := &proxyCall{target: target, app: app, scopes: proxyScopes(r.Header)}
	out := r.WithContext(context.WithValue(ctx, proxyCallKey{}, call))
	if err := p.prepareBody(out, call); err != nil {
		return err
	}
	tok, err := p.tokens.Token(ctx, app, target.account, call.scopes)
	if err != nil {
		return &publicError{answer: proxyTokenError(err), cause: err}
	}
	call.token = tok
	p.rp.ServeHTTP(c.Response(), out)
	return nil
}

// prepareBody keeps a body of at most maxRetryBody whole, so an upstream
// 401 can be retried with it; a larger one (or one of unknown length that
// turns out larger) streams through a reader that fails past maxProxyBody.
func (p *proxy) prepareBody(r *http.Request, call *proxyCall) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		r.Body, r.ContentLength, call.body = http.NoBody, 0, []byte{}
		return nil
	}
	if r.ContentLength < 0 || r.ContentLength <= maxRetryBody {
		buf, err := io.ReadAll(io.LimitReader(r.Body, maxRetryBody+1))
		if err != nil {
			return newError(http.StatusBadRequest, codeInvalidRequest, "the request body could not be read", err)
		}
		if len(buf) <= maxRetryBody {
			call.body = buf
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(buf)), int64(len(buf))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
			return nil
		}
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	}
	call.bounded = &boundedBody{r: r.Body, left: maxProxyBody}
	r.Body = call.bounded
	return nil
}

// rewrite shapes the outbound request: always IRIS_API_URL, the caller's
// path and query, its headers less credentials, cookies and Irisx-*
// (hop-by-hop and X-Forwarded-* are already gone), and the account's token.
func (p *proxy) rewrite(pr *httputil.ProxyRequest) {
	call := callOf(pr.In)
	out := pr.Out
	out.URL = &url.URL{
		Scheme:   p.upstream.Scheme,
		Host:     p.upstream.Host,
		Path:     p.upstream.Path + "/" + call.target.path,
		RawPath:  p.upstream.EscapedPath() + "/" + call.target.rawPath,
		RawQuery: pr.In.URL.RawQuery,
	}
	out.Host = ""
	out.RequestURI = ""
	h := out.Header
	for k := range h {
		if len(k) >= 6 && strings.EqualFold(k[:6], "irisx-") {
			delete(h, k)
		}
	}
	delete(h, "Authorization")
	delete(h, "Cookie")
	h["Authorization"] = []string{"Bearer " + call.token.Reveal()}
}

// roundTrip sends the request and, on a 401, retries once with a newly
// minted token when the body could be kept.
func (p *proxy) roundTrip(req *http.Request) (*http.Response, error) {
	call := callOf(req)
	resp, err := p.send(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || call.body == nil {
		return resp, err
	}
	ctx := req.Context()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	p.tokens.Forget(ctx, call.app, call.target.account, call.scopes, call.token)
	tok, err := p.tokens.Token(ctx, call.app, call.target.account, call.scopes)
	if err != nil {
		return nil, &proxyTokenErr{err}
	}
	call.token = tok
	retry := req.Clone(ctx)
	retry.Header["Authorization"] = []string{"Bearer " + tok.Reveal()}
	retry.Body, retry.ContentLength = http.NoBody, 0
	if len(call.body) > 0 {
		retry.Body, retry.ContentLength = io.NopCloser(bytes.NewReader(call.body)), int64(len(call.body))
	}
	return p.send(retry)
}

// modifyResponse drops cookies from the answer and watches GraphQL answers
// for Trackunit's RATE_LIMITED.
func (p *proxy) modifyResponse(resp *http.Response) error {
	resp.Header.Del("Set-Cookie")
	resp.Header.Del("Set-Cookie2")
	call := callOf(resp.Request)
	if call != nil && call.target.graphql {
		p.watchGraphQL(resp, call)
	}
	return nil
}

// proxyTokenErr is a token failure during the 401 retry.
type proxyTokenErr struct{ err error }

func (e *proxyTokenErr) Error() string { return e.err.Error() }
func (e *proxyTokenErr) Unwrap() error { return e.err }

// upstreamError answers a failed exchange: a body over the limit is 413, a
// token failure maps as before the exchange, anything else is 502 or 504.
// The logged error never has the URL (it could carry a query the caller
// considers private), only its cause.
func (p *proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	call := callOf(r)
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var te *proxyTokenErr
	var ae answer
	switch {
	case call != nil && call.bounded != nil && call.bounded.exceeded.Load():
		ae = newError(http.StatusRequestEntityTooLarge, codePayloadTooLarge, "request body over 10 MiB", nil).answer
	case errors.As(err, &te):
		ae = proxyTokenError(te.err)
	case r.Context().Err() != nil:
		// The caller went away: nobody reads this, but the metrics and the
		// request log should not count it as a success.
		w.WriteHeader(statusClientClosed)
		return
	case isTimeout(err):
		ae = newError(http.StatusGatewayTimeout, "upstream_timeout", "the IRIS API did not answer in time", nil).answer
	default:
		ae = newError(http.StatusBadGateway, "upstream_unavailable", "the IRIS API could not be reached", nil).answer
	}
	p.logger.Log(r.Context(), ae.logLevel(), "proxy: exchange failed", "status", ae.status, "error_code", ae.code, "error", err.Error())
	writeProxyError(w, ae)
}

// statusClientClosed is nginx's 499, recorded when the caller gave up.
const statusClientClosed = 499

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func writeProxyError(w http.ResponseWriter, ae answer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.status)
	fmt.Fprintf(w, `{"error":%q,"message":%q}`+"\n", ae.code, ae.message)
}

// boundedBody fails a read once more than left bytes have come, so a body
// of any announced or chunked length stops at the limit.
type boundedBody struct {
	r        io.ReadCloser
	left     int64
	exceeded atomic.Bool // read by the handler after the transport's goroutine set it
}

var errBodyTooLarge = errors.New("request body over 10 MiB")

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.exceeded.Load() {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	if int64(n) > b.left {
		b.exceeded.Store(true)
		return 0, errBodyTooLarge
	}
	b.left -= int64(n)
	return n, err
}

func (b *boundedBody) Close() error { return b.r.Close() }

type readCloser struct {
	io.Reader
	io.Closer
}

// proxyBuffers pools the copy buffers of the streams, so a stream of any
// length costs one 32 KiB buffer.
type proxyBuffers struct{}

var proxyBufferPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (proxyBuffers) Get() []byte  { return *proxyBufferPool.Get().(*[]byte) }
func (proxyBuffers) Put(b []byte) { proxyBufferPool.Put(&b) }
