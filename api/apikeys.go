package api

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
)

// APIKeyRegistry registers Trackunit API keys; *store.Store satisfies it.
type APIKeyRegistry interface {
	CreateAPIKey(ctx context.Context, k store.NewAPIKey) (store.APIKey, error)
	ListAPIKeys(ctx context.Context) ([]store.APIKey, error)
	DeleteAPIKey(ctx context.Context, name string) error
}

// APIKeyBroker hands out API keys' tokens; *token.APIKeyTokens satisfies it.
type APIKeyBroker interface {
	Token(ctx context.Context, name string, scopes []string, minValid time.Duration) (token.Token, error)
	// Invalidate drops a replaced or deleted key's cached tokens.
	Invalidate(name string)
}

type apiKeyService struct {
	store  APIKeyRegistry // nil: every call is unimplemented
	broker APIKeyBroker   // optional: told about replaced and deleted keys
}

var _ brokerv1connect.ApiKeyServiceHandler = (*apiKeyService)(nil)

// invalidator is the broker, or nil (not a nil-valued interface) without one.
func (s *apiKeyService) invalidator() invalidator {
	if s.broker == nil {
		return nil
	}
	return s.broker
}

// CreateApiKey registers an API key, replacing the credentials and scopes of
// an existing one with the same name and ending its cached tokens. The
// answer never carries a secret.
func (s *apiKeyService) CreateApiKey(ctx context.Context, req *connect.Request[brokerv1.CreateApiKeyRequest]) (*connect.Response[brokerv1.CreateApiKeyResponse], error) {
	if s.store == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errNotImplemented)
	}
	m := req.Msg
	k := store.NewAPIKey{Name: m.GetName(), ClientID: crypto.Secret(m.GetClientId()),
		ClientSecret: crypto.Secret(m.GetClientSecret()), Scopes: m.GetScopes()}
	got, err := createCredential(ctx, k.Validate,
		func(ctx context.Context) (store.APIKey, error) { return s.store.CreateAPIKey(ctx, k) },
		func(k store.APIKey) string { return k.Name }, s.invalidator())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&brokerv1.CreateApiKeyResponse{ApiKey: apiKeyMessage(got)}), nil
}

// ListApiKeys returns every API key, ordered by name.
func (s *apiKeyService) ListApiKeys(ctx context.Context, _ *connect.Request[brokerv1.ListApiKeysRequest]) (*connect.Response[brokerv1.ListApiKeysResponse], error) {
	if s.store == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errNotImplemented)
	}
	keys, err := s.store.ListAPIKeys(ctx)
	if err != nil {
		return nil, err
	}
	resp := &brokerv1.ListApiKeysResponse{ApiKeys: make([]*brokerv1.ApiKey, 0, len(keys))}
	for _, k := range keys {
		resp.ApiKeys = append(resp.ApiKeys, apiKeyMessage(k))
	}
	return connect.NewResponse(resp), nil
}

// DeleteApiKey removes an API key with its secrets and tokens.
func (s *apiKeyService) DeleteApiKey(ctx context.Context, req *connect.Request[brokerv1.DeleteApiKeyRequest]) (*connect.Response[brokerv1.DeleteApiKeyResponse], error) {
	if s.store == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errNotImplemented)
	}
	if err := deleteCredential(ctx, req.Msg.GetName(), s.store.DeleteAPIKey, s.invalidator()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&brokerv1.DeleteApiKeyResponse{}), nil
}

// GetApiKeyToken returns an access token for a registered API key.
func (s *tokenService) GetApiKeyToken(ctx context.Context, req *connect.Request[brokerv1.GetApiKeyTokenRequest]) (*connect.Response[brokerv1.GetTokenResponse], error) {
	if s.apiKeys == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errNotImplemented)
	}
	m := req.Msg
	if !store.ValidAPIUserName(m.GetName()) {
		return nil, invalidArgument("name is required: 1 to 128 letters, digits, '.', '_', '@' or '-'")
	}
	if m.GetMinValidSeconds() < 0 || m.GetMinValidSeconds() > maxMinValidSeconds {
		return nil, invalidArgument("minValidSeconds must be between 0 and 3600")
	}
	t, err := s.apiKeys.Token(ctx, m.GetName(), m.GetScopes(), time.Duration(m.GetMinValidSeconds())*time.Second)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(tokenResponse(t)), nil
}

func apiKeyMessage(k store.APIKey) *brokerv1.ApiKey {
	m := &brokerv1.ApiKey{
		Name:         k.Name,
		ClientIdHint: k.ClientIDHint,
		Scopes:       k.Scopes,
		Status:       string(k.Status),
		CreatedAt:    timestamppb.New(k.CreatedAt),
	}
	if k.LastTokenAt != nil {
		m.LastTokenAt = timestamppb.New(*k.LastTokenAt)
	}
	if k.LastError != "" {
		m.LastError = &k.LastError
	}
	return m
}
