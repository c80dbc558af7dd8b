package harness

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// GetAPIUserTokenPath is the Connect route of TokenService.GetApiUserToken.
const GetAPIUserTokenPath = "/irisx.broker.v1.TokenService/GetApiUserToken"

// APIUserTokenRequestBody is the Connect-JSON body of GetApiUserToken for
// the API user registered as name.
func APIUserTokenRequestBody(name string) []byte {
	b, _ := json.Marshal(map[string]string{"name": name}) // strings cannot fail
	return b
}

// APIUser is a Trackunit API user with fresh random credentials, known to
// the simulator's /token; Register makes it known to a broker too.
type APIUser struct {
	// Name is what the broker knows the user by (GetApiUserToken's name).
	Name string
	// Username is the Trackunit API user name, the simulator's key.
	Username     string
	Password     crypto.Secret
	ClientID     string
	ClientSecret crypto.Secret
}

// NewAPIUser makes an API user with fresh credentials and adds it to the
// simulator (AddUser), so that its password grant succeeds.
func NewAPIUser(sim *trackunitsim.Sim, name, username string) APIUser {
	clientID, secret := trackunitsim.NewClientCredentials()
	pw := make([]byte, 24)
	_, _ = rand.Read(pw) // crypto/rand.Read never fails
	u := APIUser{Name: name, Username: username, Password: crypto.Secret(base64.RawURLEncoding.EncodeToString(pw)),
		ClientID: clientID, ClientSecret: secret}
	sim.AddUser(u.Username, u.Password, u.ClientID, u.ClientSecret)
	return u
}

// APIUserClient returns a Connect (protobuf) client of ApiUserService.
func APIUserClient(client *http.Client, internalURL string) brokerv1connect.ApiUserServiceClient {
	return brokerv1connect.NewApiUserServiceClient(client, internalURL)
}

// Register registers the user with CreateApiUser (default scopes) through
// c with the rig's admin bearer.
func (u APIUser) Register(ctx context.Context, c brokerv1connect.ApiUserServiceClient) error {
	req := connect.NewRequest(&brokerv1.CreateApiUserRequest{Name: u.Name, Username: u.Username,
		Password: u.Password.Reveal(), ClientId: u.ClientID, ClientSecret: u.ClientSecret.Reveal()})
	req.Header().Set("Authorization", "Bearer "+AdminToken)
	resp, err := c.CreateApiUser(ctx, req)
	if err != nil {
		return fmt.Errorf("harness: CreateApiUser: %w", err)
	}
	if got := resp.Msg.GetApiUser().GetName(); got != u.Name {
		return fmt.Errorf("harness: CreateApiUser registered %q, want %q", got, u.Name)
	}
	return nil
}

// ExpireAPIUserToken ages the access token the database caches for an API
// user past its expiry, as if its whole lifetime had gone by: the expiry
// moves to a second ago and the time it was obtained moves back by the
// same amount, so the broker sees a token of the usual lifetime that needs
// renewing. The refresh token is left as it is. Replicas go on serving the
// token they remember until they next ask the database (within 1 s).
func ExpireAPIUserToken(ctx context.Context, dbURL, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("harness: connect to the database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Both right-hand sides read the row as it was.
	tag, err := conn.Exec(ctx, `UPDATE api_users
		SET last_token_at = last_token_at - (token_expires_at - now()) - interval '1 second',
		    token_expires_at = now() - interval '1 second'
		WHERE name = $1 AND access_token_enc IS NOT NULL AND last_token_at IS NOT NULL`, name)
	if err != nil {
		return fmt.Errorf("harness: expiring API user token: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("harness: API user %q has no cached access token to expire", name)
	}
	return nil
}
