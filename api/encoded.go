package api

import (
	"fmt"
	"slices"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/token"
)

// encodedTokens keeps, for each token recently handed out, the one
// GetTokenResponse message built for it and that message already encoded
// as Connect-JSON and as protobuf, so a cache hit neither builds nor
// encodes a response: the token service's codecs (tokenCodecs) copy the
// bytes when they are asked to marshal that very message. Messages handed
// out from here are shared and never modified.
type encodedTokens struct {
	mu sync.RWMutex
	m  map[string]*encodedToken // by access token
}

type encodedToken struct {
	msg         *brokerv1.GetTokenResponse
	json, proto []byte
}

// maxEncodedTokens bounds the memory held (a few KiB per token); past it
// the map starts over, which costs the next calls one encoding each.
const maxEncodedTokens = 4096

func newEncodedTokens() *encodedTokens {
	return &encodedTokens{m: make(map[string]*encodedToken)}
}

// response returns the message for t: the shared one when t was seen
// before (same token, type, expiry and scopes), else a new one, encoded
// and kept.
func (c *encodedTokens) response(t token.Token) *brokerv1.GetTokenResponse {
	access := t.AccessToken.Reveal()
	c.mu.RLock()
	e := c.m[access]
	c.mu.RUnlock()
	if e != nil && e.msg.GetTokenType() == t.TokenType && e.msg.GetExpiresAt().AsTime().Equal(t.ExpiresAt) &&
		slices.Equal(e.msg.GetScopes(), t.Scopes) {
		return e.msg
	}
	msg := tokenResponse(t)
	j, err1 := protojson.MarshalOptions{}.Marshal(msg)
	p, err2 := proto.MarshalOptions{}.Marshal(msg)
	if err1 != nil || err2 != nil {
		return msg // encoded the usual way, which reports the error
	}
	c.mu.Lock()
	if len(c.m) >= maxEncodedTokens {
		clear(c.m)
	}
	c.m[access] = &encodedToken{msg: msg, json: j, proto: p}
	c.mu.Unlock()
	return msg
}

// encoded returns the kept encoding of msg, if msg is a message response
// handed out.
func (c *encodedTokens) encoded(msg any, json bool) ([]byte, bool) {
	m, ok := msg.(*brokerv1.GetTokenResponse)
	if !ok || c == nil {
		return nil, false
	}
	c.mu.RLock()
	e := c.m[m.GetAccessToken()]
	c.mu.RUnlock()
	if e == nil || e.msg != m {
		return nil, false
	}
	if json {
		return e.json, true
	}
	return e.proto, true
}

// tokenCompressMinBytes: the token service's answers (a token, well under
// this size) go uncompressed even to a client that accepts gzip, as Connect
// and gRPC allow. Connect's gRPC client accepts gzip by default, and
// resetting and running a gzip writer for every small answer was about half
// of the handler's CPU per gRPC call (BenchmarkGetTokenGRPC's profile:
// compressionPool.Compress, mostly flate's compressor reset).
const tokenCompressMinBytes = 4 << 10

// tokenCodecs are Connect's own protobuf and JSON codecs (same options,
// same errors) that answer a kept GetTokenResponse with its kept bytes, and
// the compression threshold above.
func tokenCodecs(c *encodedTokens) []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCompressMinBytes(tokenCompressMinBytes),
		connect.WithCodec(&cachingCodec{name: "proto", cache: c}),
		connect.WithCodec(&cachingCodec{name: "json", json: true, cache: c}),
		connect.WithCodec(&cachingCodec{name: "json; charset=utf-8", json: true, cache: c}),
	}
}

type cachingCodec struct {
	name  string
	json  bool
	cache *encodedTokens
}

func (c *cachingCodec) Name() string   { return c.name }
func (c *cachingCodec) IsBinary() bool { return !c.json }

func (c *cachingCodec) Marshal(message any) ([]byte, error) {
	return c.MarshalAppend(nil, message)
}

func (c *cachingCodec) MarshalAppend(dst []byte, message any) ([]byte, error) {
	if b, ok := c.cache.encoded(message, c.json); ok {
		return append(dst, b...), nil
	}
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T doesn't implement proto.Message", message)
	}
	if c.json {
		return protojson.MarshalOptions{}.MarshalAppend(dst, m)
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, m)
}

func (c *cachingCodec) Unmarshal(data []byte, message any) error {
	m, ok := message.(proto.Message)
	if !ok {
		return fmt.Errorf("%T doesn't implement proto.Message", message)
	}
	var err error
	if c.json {
		if r, ok := message.(*brokerv1.GetTokenRequest); ok && decodeGetTokenRequest(data, r) {
			return nil
		}
		if len(data) == 0 {
			return fmt.Errorf("zero-length payload is not a valid JSON object")
		}
		// Unknown fields are discarded, as Connect's codec does.
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, m)
	} else {
		err = proto.Unmarshal(data, m)
	}
	if err != nil {
		return fmt.Errorf("unmarshal into %T: %w", message, err)
	}
	return nil
}

// decodeGetTokenRequest decodes the plain form of a Connect-JSON
// GetTokenRequest that callers send: one object of the fields' JSON names,
// each at most once, strings of printable ASCII without escapes, scopes an
// array of such strings, minValidSeconds a non-negative integer without
// sign, exponent or fraction. It reports false, having changed nothing,
// for anything else (other spellings, escapes, null, unknown or repeated
// fields, malformed JSON), which protojson then decodes or refuses as it
// always does; whatever it accepts decodes to what protojson would
// produce (FuzzDecodeGetTokenRequest checks it).
func decodeGetTokenRequest(data []byte, m *brokerv1.GetTokenRequest) bool {
	d := plainJSON{b: data}
	var (
		app, account string
		scopes       []string
		minValid     int32
		seen         uint8
	)
	if !d.byte('{') {
		return false
	}
	if !d.peek('}') {
		for {
			key, ok := d.raw()
			if !ok || !d.byte(':') {
				return false
			}
			var bit uint8
			switch string(key) { // compared, not allocated
			case "irisAppId":
				bit = 1
				app, ok = d.str()
			case "accountId":
				bit = 2
				account, ok = d.str()
			case "scopes":
				bit = 4
				scopes, ok = d.strs()
			case "minValidSeconds":
				bit = 8
				minValid, ok = d.uint31()
			default:
				return false
			}
			if !ok || seen&bit != 0 {
				return false
			}
			seen |= bit
			if d.byte(',') {
				continue
			}
			break
		}
	}
	if !d.byte('}') || !d.end() {
		return false
	}
	proto.Reset(m)
	m.IrisAppId, m.AccountId, m.Scopes, m.MinValidSeconds = app, account, scopes, minValid
	return true
}

// plainJSON is the small strict scanner of decodeGetTokenRequest.
type plainJSON struct {
	b []byte
	i int
}

func (d *plainJSON) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// byte consumes c (after whitespace) if it is next.
func (d *plainJSON) byte(c byte) bool {
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

func (d *plainJSON) peek(c byte) bool {
	d.ws()
	return d.i < len(d.b) && d.b[d.i] == c
}

func (d *plainJSON) end() bool {
	d.ws()
	return d.i == len(d.b)
}

// str reads a string of printable ASCII other than '"' and '\'.
func (d *plainJSON) str() (string, bool) {
	b, ok := d.raw()
	return string(b), ok
}

// raw is str's bytes, still in the request body.
func (d *plainJSON) raw() ([]byte, bool) {
	if !d.byte('"') {
		return nil, false
	}
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			b := d.b[start:d.i]
			d.i++
			return b, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, false
		}
		d.i++
	}
	return nil, false
}

func (d *plainJSON) strs() ([]string, bool) {
	if !d.byte('[') {
		return nil, false
	}
	if d.byte(']') {
		return nil, true
	}
	var out []string
	for {
		s, ok := d.str()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		if d.byte(',') {
			continue
		}
		return out, d.byte(']')
	}
}

// uint31 reads 0 or a digit string without a leading zero, at most
// 2147483647.
func (d *plainJSON) uint31() (int32, bool) {
	d.ws()
	start := d.i
	var n int64
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		n = n*10 + int64(d.b[d.i]-'0')
		d.i++
		if n > 1<<31-1 {
			return 0, false
		}
	}
	digits := d.i - start
	if digits == 0 || (digits > 1 && d.b[start] == '0') {
		return 0, false
	}
	// A fraction or exponent follows: leave it to protojson.
	if d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		return 0, false
	}
	return int32(n), true
}
