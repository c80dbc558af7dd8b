package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// SimServer is the Trackunit simulator served on a loopback port.
type SimServer struct {
	*trackunitsim.Sim
	// URL is the simulator's base URL: TRACKUNIT_AUTH_URL.
	URL string
	// Addr is its "host:port", for a proxy in front of it.
	Addr string
	srv  *http.Server
	done chan struct{}
}

// StartSim creates a simulator with opts and serves it on 127.0.0.1.
func StartSim(opts trackunitsim.Options) (*SimServer, error) {
	sim, err := trackunitsim.New(opts)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("harness: simulator listen: %w", err)
	}
	s := &SimServer{Sim: sim, URL: "http://" + ln.Addr().String(), Addr: ln.Addr().String(), done: make(chan struct{}),
		srv: &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(fmt.Sprintf("harness: simulator server: %v", err))
		}
	}()
	return s, nil
}

// JWKSURL is the simulator's marketplace JWKS: TRACKUNIT_JWKS_URL.
func (s *SimServer) JWKSURL() string { return s.URL + "/api/marketplace/jwks" }

// Close releases held requests and stops the server.
func (s *SimServer) Close() {
	s.Sim.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}
