package api

import (
	"net/http"
	"time"
)

// HTTP/2 limits of the h2c server. A client may open at most this many
// streams at once on one connection, and the buffers it can make the
// server hold are bounded per stream and per connection, so one gRPC client
// cannot pin more memory than a few request messages' worth.
const (
	h2MaxConcurrentStreams = 100
	h2MaxReadFrameSize     = 1 << 20          // the largest frame a client may send
	h2MaxBufferPerStream   = 1 << 20          // flow-control window of one stream
	h2MaxBufferPerConn     = 4 << 20          // and of all the connection's streams
	h2MaxHeaderTableSize   = 4 << 10          // HPACK table: the protocol default
	h2PingTimeout          = 15 * time.Second // a peer that stops answering pings is dropped
	h2SendPingTimeout      = 60 * time.Second // an idle connection is pinged after this long
)

// NewServer returns the http.Server for one listener, with the time-outs
// every listener has; with h2c it also speaks HTTP/2 without TLS (gRPC on
// the internal listener), under the limits above.
func NewServer(h http.Handler, h2c bool) *http.Server {
	s := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// A token request may wait out upstream retries (3 attempts,
		// Retry-After up to 10 s each) before it can answer.
		WriteTimeout: 60 * time.Second,
		IdleTimeout:  120 * time.Second,
		// Big enough that an oversized Trackunit-Identity header (the
		// verifier refuses anything over 8 KiB) reaches the handler and gets
		// the contract's 401 rather than the server's 431.
		MaxHeaderBytes: 2 << 20,
	}
	if h2c {
		// gRPC clients speak HTTP/2 without TLS on the internal listener.
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		s.Protocols = &p
		s.HTTP2 = &http.HTTP2Config{
			MaxConcurrentStreams:          h2MaxConcurrentStreams,
			MaxReadFrameSize:              h2MaxReadFrameSize,
			MaxReceiveBufferPerStream:     h2MaxBufferPerStream,
			MaxReceiveBufferPerConnection: h2MaxBufferPerConn,
			MaxDecoderHeaderTableSize:     h2MaxHeaderTableSize,
			MaxEncoderHeaderTableSize:     h2MaxHeaderTableSize,
			SendPingTimeout:               h2SendPingTimeout,
			PingTimeout:                   h2PingTimeout,
		}
	}
	return s
}
