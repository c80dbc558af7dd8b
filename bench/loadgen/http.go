package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ErrNotLoopback is returned when a load generator transport is asked to
// dial anything but a loopback address: benchmarks and drills never send
// load over a real network.
var ErrNotLoopback = errors.New("loadgen: refusing to dial a non-loopback address")

// DialLoopback is a DialContext that dials addr only if it resolves to
// loopback IPs.
func DialLoopback(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return nil, fmt.Errorf("%w: %s", ErrNotLoopback, addr)
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("%w: %s resolves to nothing", ErrNotLoopback, addr)
	}
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return d.DialContext(ctx, network, net.JoinHostPort(ips[0].String(), port))
}

// HTTP1Client returns a client for HTTP/1.1 load: keep-alive connections,
// at most conns of them per host (one per worker when conns equals
// Config.Workers), loopback only.
func HTTP1Client(conns int) *http.Client {
	t := &http.Transport{
		DialContext:         DialLoopback,
		MaxConnsPerHost:     conns,
		MaxIdleConnsPerHost: conns,
		MaxIdleConns:        conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// H2CClient returns a client speaking HTTP/2 without TLS (h2c), as gRPC
// clients do on the broker's internal listener: concurrent calls share
// multiplexed connections. Loopback only.
func H2CClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	t := &http.Transport{
		DialContext:        DialLoopback,
		Protocols:          &p,
		DisableCompression: true,
	}
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}
