package api

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
)

// APIUserRegistry registers Trackunit API users; *store.Store satisfies it.
type APIUserRegistry interface {
	CreateAPIUser(ctx context.Context, u store.NewAPIUser) (store.APIUser, error)
	ListAPIUsers(ctx context.Context) ([]store.APIUser, error)
	DeleteAPIUser(ctx context.Context, name string) error
}

// APIUserBroker hands out API users' tokens; *token.APIUserTokens satisfies it.
type APIUserBroker interface {
	Token(ctx context.Context, name string, minValid time.Duration) (token.Token, error)
	// Invalidate makes this replica forget a user it may remember, after
	// the user was replaced or deleted.
	Invalidate(name string)
}

type apiUserService struct {
	store  APIUserRegistry // nil: every call is unimplemented (API users not configured)
	broker APIUserBroker   // optional: told about replaced and deleted users
}

// invalidator is the broker, or nil (not a nil-valued interface) without one.
func (s *apiUserService) invalidator() invalidator {
	if s.broker == nil {
		return nil
	}
	return s.broker
}

var _ brokerv1connect.ApiUserServiceHandler = (*apiUserService)(nil)

// CreateApiUser registers an API user, replacing the registration of an
// existing one with the same name (that is how rejected credentials are
// corrected). The answer never carries a secret.
func (s *apiUserService) CreateApiUser(ctx context.Context, req *connect.Request[brokerv1.CreateApiUserRequest]) (*connect.Response[brokerv1.CreateApiUserResponse], error) {
	if s.store == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errNotImplemented)
	}
	m := req.Msg
	u := store.NewAPIUser{
		Name:         m.GetName(),
		Username:     m.GetUsername(),
		Password:     crypto.Secret(m.GetPassword()),
		ClientID:     crypto.Secret(m.GetClientId()),
		ClientSecret: crypto.Secret(m.GetClientSecret()),
		Scopes:       m.GetScopes(),
	}
	got, err := createCredential(ctx, u.Validate,
		func(ctx context.Context) (store.APIUser, error) { return s.store.CreateAPIUser(ctx, u) },
		func(u store.APIUser) string { return u.Name }, s.invalidator())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&brokerv1.CreateApiUserResponse{ApiUser: apiUserMessage(got)}), nil
}

// ListApiUsers returns every API user, ordered by name.
func (s *apiUserService) ListApiUsers(ctx context.Context, _ *connect.Request[brokerv1.ListApiUsersRequest]) (*connect.Response[brokerv1.ListApiUsersResponse], error) {
	if s.store == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errNotImplemented)
	}
	users, err := s.store.ListAPIUsers(ctx)
	if err != nil {
		return nil, err
	}
	resp := &brokerv1.ListApiUsersResponse{ApiUsers: make([]*brokerv1.ApiUser, 0, len(users))}
	for _, u := range users {
		resp.ApiUsers = append(resp.ApiUsers, apiUserMessage(u))
	}
	return connect.NewResponse(resp), nil
}

// DeleteApiUser removes an API user with its secrets and tokens.
func (s *apiUserService) DeleteApiUser(ctx context.Context, req *connect.Request[brokerv1.DeleteApiUserRequest]) (*connect.Response[brokerv1.DeleteApiUserResponse], error) {
	if s.store == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errNotImplemented)
	}
	if err := deleteCredential(ctx, req.Msg.GetName(), s.store.DeleteAPIUser, s.invalidator()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&brokerv1.DeleteApiUserResponse{}), nil
}

// getAPIUserToken serves TokenService.GetApiUserToken.
func getAPIUserToken(ctx context.Context, b APIUserBroker, m *brokerv1.GetApiUserTokenRequest) (*brokerv1.GetTokenResponse, error) {
	if b == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errNotImplemented)
	}
	if !store.ValidAPIUserName(m.GetName()) {
		return nil, invalidArgument("name is required: 1 to 128 letters, digits, '.', '_', '@' or '-'")
	}
	if m.GetMinValidSeconds() < 0 || m.GetMinValidSeconds() > maxMinValidSeconds {
		return nil, invalidArgument("minValidSeconds must be between 0 and 3600")
	}
	t, err := b.Token(ctx, m.GetName(), time.Duration(m.GetMinValidSeconds())*time.Second)
	if err != nil {
		return nil, err
	}
	return tokenResponse(t), nil
}

// validationError turns a store.ValidationError, whose message names fields
// and never values, into invalid_argument; other errors pass unchanged.
func validationError(err error) error {
	var ve *store.ValidationError
	if errors.As(err, &ve) {
		return invalidArgument(ve.Message)
	}
	return err
}

func apiUserMessage(u store.APIUser) *brokerv1.ApiUser {
	m := &brokerv1.ApiUser{
		Name:      u.Name,
		Username:  u.Username,
		Scopes:    u.Scopes,
		Status:    string(u.Status),
		CreatedAt: timestamppb.New(u.CreatedAt),
		UpdatedAt: timestamppb.New(u.UpdatedAt),
	}
	if u.LastTokenAt != nil {
		m.LastTokenAt = timestamppb.New(*u.LastTokenAt)
	}
	if u.LastError != "" {
		m.LastError = &u.LastError
	}
	return m
}
