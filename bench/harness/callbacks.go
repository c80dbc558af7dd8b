package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/google/uuid"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// Callback is one install callback, signed ahead of time so that signing
// costs nothing while load is measured.
type Callback struct {
	Type         string
	IrisAppID    string
	AccountID    string
	ClientID     string
	ClientSecret crypto.Secret
	// Identity is the Trackunit-Identity JWT.
	Identity string
	// Body is the JSON body, credentials included.
	Body []byte
}

// NewCallback signs an INSTALLED callback for a new random account with
// fresh credentials. With register the simulator's /apptoken accepts the
// credentials, so tokens can be minted for the install.
func NewCallback(sim *trackunitsim.Sim, app string, register bool) (Callback, error) {
	clientID, secret := trackunitsim.NewClientCredentials()
	cb := Callback{Type: trackunitsim.EventInstalled, IrisAppID: app, AccountID: uuid.NewString(),
		ClientID: clientID, ClientSecret: secret}
	if err := cb.sign(sim); err != nil {
		return Callback{}, err
	}
	if register {
		sim.AddClient(clientID, secret, nil)
	}
	return cb, nil
}

// Resign returns the callback with a freshly signed identity (a new jti and
// iat), as Trackunit would send a repeat delivery of the same event later.
func (cb Callback) Resign(sim *trackunitsim.Sim) (Callback, error) {
	err := cb.sign(sim)
	return cb, err
}

func (cb *Callback) sign(sim *trackunitsim.Sim) error {
	jwt, err := sim.SignIdentity(trackunitsim.Claims{"accountId": cb.AccountID, "irisAppId": cb.IrisAppID})
	if err != nil {
		return fmt.Errorf("harness: sign identity: %w", err)
	}
	cb.Identity = jwt
	cb.Body, err = json.Marshal(map[string]string{
		"type": cb.Type, "irisAppId": cb.IrisAppID, "accountId": cb.AccountID,
		"clientId": cb.ClientID, "clientSecret": cb.ClientSecret.Reveal(),
	})
	return err
}

// Presign makes n callbacks (see NewCallback) on `parallel` goroutines;
// RSA signing is the slow part.
func Presign(ctx context.Context, sim *trackunitsim.Sim, app string, n, parallel int, register bool) ([]Callback, error) {
	out := make([]Callback, n)
	errs := make([]error, parallel)
	var wg sync.WaitGroup
	for w := range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += parallel {
				if ctx.Err() != nil {
					errs[w] = ctx.Err()
					return
				}
				cb, err := NewCallback(sim, app, register)
				if err != nil {
					errs[w] = err
					return
				}
				out[i] = cb
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Post sends the callback to publicURL's /appinstall and returns the status
// and body of the answer.
func (cb Callback) Post(ctx context.Context, client *http.Client, publicURL string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, publicURL+"/appinstall", bytes.NewReader(cb.Body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(trackunitsim.IdentityHeader, cb.Identity)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// PostInstalled sends the callback and fails unless it was answered 200
// {"status":"installed"}.
func (cb Callback) PostInstalled(ctx context.Context, client *http.Client, publicURL string) error {
	status, body, err := cb.Post(ctx, client, publicURL)
	if err != nil {
		return err
	}
	var out struct {
		Status string `json:"status"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &out) != nil || out.Status != "installed" {
		return fmt.Errorf("harness: install callback answered %d %s", status, bytes.TrimSpace(body))
	}
	return nil
}
