package api

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/token"
)

// maxMinValidSeconds bounds minValidSeconds by a token's lifetime at
// Trackunit (3600 s): no token could ever satisfy more. A demand close to it
// makes most calls mint a new token, which is the caller's choice.
const maxMinValidSeconds = 3600

// Broker mints install tokens.
type Broker interface {
	Token(ctx context.Context, r token.Request) (token.Token, error)
}

type tokenService struct {
	broker      Broker
	allowedApps []string
	apiUsers    APIUserBroker // nil: GetApiUserToken is unimplemented
	apiKeys     APIKeyBroker  // nil: GetApiKeyToken is unimplemented
	// encoded keeps GetToken's answers encoded (nil: encode every time).
	encoded *encodedTokens
}

var _ brokerv1connect.TokenServiceHandler = (*tokenService)(nil)

// GetToken returns an access token for one install.
func (s *tokenService) GetToken(ctx context.Context, req *connect.Request[brokerv1.GetTokenRequest]) (*connect.Response[brokerv1.GetTokenResponse], error) {
	resp, err := s.getToken(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// getToken is GetToken's work, shared with the short path
// (api/tokens_fast.go).
func (s *tokenService) getToken(ctx context.Context, m *brokerv1.GetTokenRequest) (*brokerv1.GetTokenResponse, error) {
	app := m.GetIrisAppId()
	if app == "" {
		if len(s.allowedApps) != 1 {
			return nil, invalidArgument("irisAppId is required unless ALLOWED_APP_IDS names exactly one app")
		}
		app = s.allowedApps[0]
	}
	if err := checkInstallKey(app, m.GetAccountId()); err != nil {
		return nil, err
	}
	if m.GetMinValidSeconds() < 0 || m.GetMinValidSeconds() > maxMinValidSeconds {
		return nil, invalidArgument("minValidSeconds must be between 0 and 3600")
	}
	t, err := s.broker.Token(ctx, token.Request{
		IrisAppID: app,
		AccountID: canonicalUUID(m.GetAccountId()),
		Scopes:    m.GetScopes(),
		MinValid:  time.Duration(m.GetMinValidSeconds()) * time.Second,
	})
	if err != nil {
		return nil, err
	}
	if s.encoded != nil {
		return s.encoded.response(t), nil
	}
	return tokenResponse(t), nil
}

// GetApiUserToken returns an access token for a registered API user.
func (s *tokenService) GetApiUserToken(ctx context.Context, req *connect.Request[brokerv1.GetApiUserTokenRequest]) (*connect.Response[brokerv1.GetTokenResponse], error) {
	resp, err := getAPIUserToken(ctx, s.apiUsers, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func tokenResponse(t token.Token) *brokerv1.GetTokenResponse {
	return &brokerv1.GetTokenResponse{
		AccessToken: t.AccessToken.Reveal(),
		TokenType:   t.TokenType,
		ExpiresAt:   timestamppb.New(t.ExpiresAt),
		Scopes:      t.Scopes,
	}
}
