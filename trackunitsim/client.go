package trackunitsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client drives a running simulator through its /sim control API, for the
// trackunit-sim command and for tests against a simulator in another process.
type Client struct {
	// BaseURL is the simulator's root, e.g. http://127.0.0.1:8090.
	BaseURL string
	// HTTPClient defaults to a client with a 30 s time-out.
	HTTPClient *http.Client
}

// Send asks the simulator to sign and send an install callback; it registers
// the credentials with its /apptoken.
func (c *Client) Send(ctx context.Context, req SendRequest) (SendResponse, error) {
	var resp SendResponse
	err := c.do(ctx, http.MethodPost, "/sim/send", req, &resp)
	return resp, err
}

// Rotate asks the simulator for a new signing key of the given kind.
func (c *Client) Rotate(ctx context.Context, kind string) (kid string, err error) {
	var resp RotateResponse
	err = c.do(ctx, http.MethodPost, "/sim/rotate", RotateRequest{Kind: kind}, &resp)
	return resp.KID, err
}

// Revoke makes the simulator's /apptoken refuse a client.
func (c *Client) Revoke(ctx context.Context, clientID string) error {
	return c.do(ctx, http.MethodPost, "/sim/revoke", RevokeRequest{ClientID: clientID}, nil)
}

// AddUser registers a /token API user with the simulator.
func (c *Client) AddUser(ctx context.Context, u UserRequest) error {
	return c.do(ctx, http.MethodPost, "/sim/users", u, nil)
}

// InjectFault sets an endpoint's fault.
func (c *Client) InjectFault(ctx context.Context, f FaultRequest) error {
	return c.do(ctx, http.MethodPost, "/sim/faults", f, nil)
}

// ClearFaults removes every fault.
func (c *Client) ClearFaults(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/sim/faults", nil, nil)
}

// Stats returns the simulator's counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := c.do(ctx, http.MethodGet, "/sim/stats", nil, &st)
	return st, err
}

// do sends a control request and decodes a 2xx answer into out (if non-nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("trackunitsim: encode %s: %w", path, err)
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("trackunitsim: %s: %w", path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("trackunitsim: %s: %w", path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxCallbackResponse))
	if err != nil {
		return fmt.Errorf("trackunitsim: %s: read answer: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return fmt.Errorf("trackunitsim: %s: simulator answered %d: %s", path, resp.StatusCode, e.Error)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("trackunitsim: %s: decode answer: %w", path, err)
		}
	}
	return nil
}
