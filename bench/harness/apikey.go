package harness

import (
	"context"
	"fmt"
	"net/http"

	"connectrpc.com/connect"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// GetAPIKeyTokenPath is the Connect route of TokenService.GetApiKeyToken.
const GetAPIKeyTokenPath = "/irisx.broker.v1.TokenService/GetApiKeyToken"

// APIKeyTokenRequestBody is the Connect-JSON body of GetApiKeyToken for the
// API key registered as name, all of its scopes: the same {"name": ...}
// object as GetApiUserToken's.
func APIKeyTokenRequestBody(name string) []byte { return APIUserTokenRequestBody(name) }

// APIKey is a Trackunit API key with fresh random credentials, known to the
// simulator's /token/v2; Register makes it known to a broker too.
type APIKey struct {
	// Name is what the broker knows the key by (GetApiKeyToken's name).
	Name         string
	ClientID     string
	ClientSecret crypto.Secret
	Scopes       []string
}

// NewAPIKey makes an API key with fresh credentials allowed scopes and adds
// it to the simulator (AddAPIKey), so that /token/v2 mints for it.
func NewAPIKey(sim *trackunitsim.Sim, name string, scopes []string) APIKey {
	clientID, secret := trackunitsim.NewClientCredentials()
	k := APIKey{Name: name, ClientID: clientID, ClientSecret: secret, Scopes: scopes}
	sim.AddAPIKey(k.ClientID, k.ClientSecret, k.Scopes)
	return k
}

// APIKeyClient returns a Connect (protobuf) client of ApiKeyService.
func APIKeyClient(client *http.Client, internalURL string) brokerv1connect.ApiKeyServiceClient {
	return brokerv1connect.NewApiKeyServiceClient(client, internalURL)
}

// Register registers the key with CreateApiKey through c with the rig's
// admin bearer.
func (k APIKey) Register(ctx context.Context, c brokerv1connect.ApiKeyServiceClient) error {
	req := connect.NewRequest(&brokerv1.CreateApiKeyRequest{Name: k.Name, ClientId: k.ClientID,
		ClientSecret: k.ClientSecret.Reveal(), Scopes: k.Scopes})
	req.Header().Set("Authorization", "Bearer "+AdminToken)
	resp, err := c.CreateApiKey(ctx, req)
	if err != nil {
		return fmt.Errorf("harness: CreateApiKey: %w", err)
	}
	if got := resp.Msg.GetApiKey().GetName(); got != k.Name {
		return fmt.Errorf("harness: CreateApiKey registered %q, want %q", got, k.Name)
	}
	return nil
}
