// Package client is the Go client for irisx-broker's internal TokenService:
// it fetches IRIS API access tokens for an account's install of an IrisX app,
// or for a registered API user, and offers them as an oauth2.TokenSource so
// oauth2.NewClient can call the IRIS API with them.
//
// Errors from the broker keep their Connect code, so callers branch with
// connect.CodeOf(err): connect.CodeNotFound for an unknown install,
// connect.CodeFailedPrecondition for an uninstalled one or rejected
// credentials, connect.CodeUnavailable while Trackunit is failing, and
// connect.CodeUnauthenticated for a wrong bearer token.
package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/oauth2"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/crypto"
)

// requestTimeout bounds one call on the default HTTP client. It is generous
// because the broker itself retries Trackunit (up to 3 attempts, honouring
// Retry-After up to 10 s) before it answers unavailable.
const requestTimeout = time.Minute

// errMalformedResponse reports a token response the client cannot use; it
// would only come from a broker that breaks the contract.
var errMalformedResponse = errors.New("malformed token response")

// Client calls irisx-broker's TokenService. It is safe for concurrent use.
type Client struct {
	tokens    brokerv1connect.TokenServiceClient
	irisAppID string
	// now is the clock TokenSource judges expiry by; tests replace it.
	now func() time.Time
}

// Option configures a Client built by New.
type Option func(*options)

type options struct {
	httpClient connect.HTTPClient
	grpc       bool
	irisAppID  string
	propagator propagation.TextMapPropagator
}

// WithPropagator sets how the caller's trace context travels with each
// call; the default is W3C Trace Context (traceparent, tracestate), the
// format the broker accepts. Pass otel.GetTextMapPropagator() to use the
// application's own.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(o *options) { o.propagator = p }
}

// WithHTTPClient makes the Client send its calls through h instead of its
// default HTTP client. With WithGRPC, h must speak HTTP/2 (h2c for an
// http:// base URL).
func WithHTTPClient(h connect.HTTPClient) Option {
	return func(o *options) { o.httpClient = h }
}

// WithGRPC makes the Client use the gRPC protocol instead of the Connect
// protocol. The default HTTP client then speaks HTTP/2 only: unencrypted
// (h2c, prior knowledge) for an http:// base URL, over TLS for https://.
func WithGRPC() Option {
	return func(o *options) { o.grpc = true }
}

// WithIrisAppID sets the IrisX app id (such as "@org/app") sent with every
// GetToken call. Without it the broker picks its one allowed app, which
// works only when ALLOWED_APP_IDS names exactly one.
func WithIrisAppID(id string) Option {
	return func(o *options) { o.irisAppID = id }
}

// New returns a Client for the broker's internal listener at baseURL (such
// as "http://127.0.0.1:8081"), sending bearerToken, one of the broker's
// INTERNAL_API_TOKENS, as "Authorization: Bearer" on every call.
func New(baseURL, bearerToken string, opts ...Option) *Client {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	httpClient := o.httpClient
	if httpClient == nil {
		httpClient = defaultHTTPClient(o.grpc)
	}
	if o.propagator == nil {
		o.propagator = propagation.TraceContext{}
	}
	clientOpts := []connect.ClientOption{
		connect.WithInterceptors(traceInterceptor(o.propagator), bearerInterceptor(crypto.Secret(bearerToken))),
	}
	if o.grpc {
		clientOpts = append(clientOpts, connect.WithGRPC())
	}
	return &Client{
		tokens:    brokerv1connect.NewTokenServiceClient(httpClient, baseURL, clientOpts...),
		irisAppID: o.irisAppID,
		now:       time.Now,
	}
}

func defaultHTTPClient(grpc bool) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if grpc {
		// gRPC needs HTTP/2; the internal listener serves it without TLS.
		var p http.Protocols
		p.SetHTTP2(true)
		p.SetUnencryptedHTTP2(true)
		transport.Protocols = &p
	}
	return &http.Client{Transport: transport, Timeout: requestTimeout}
}

// traceInterceptor sends the trace context of the caller's ctx with every
// call, so the broker's spans join the caller's trace. It starts no span
// of its own: a caller that wants client spans adds otelconnect.
func traceInterceptor(p propagation.TextMapPropagator) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			p.Inject(ctx, propagation.HeaderCarrier(req.Header()))
			return next(ctx, req)
		}
	}
}

// bearerInterceptor adds the broker's bearer token to every call. The token
// is held as a crypto.Secret so it cannot be printed by accident.
func bearerInterceptor(token crypto.Secret) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token.Reveal())
			return next(ctx, req)
		}
	}
}

// Token returns an access token for accountID's install of the app, carrying
// scopes (none means the broker's DEFAULT_SCOPES). The broker caches tokens,
// so calling Token for every request is cheap, but TokenSource saves even
// the round trip. The granted scopes are in tok.Extra("scope"),
// space-separated.
func (c *Client) Token(ctx context.Context, accountID string, scopes ...string) (*oauth2.Token, error) {
	return c.appToken(ctx, accountID, scopes, 0)
}

func (c *Client) appToken(ctx context.Context, accountID string, scopes []string, minValid time.Duration) (*oauth2.Token, error) {
	resp, err := c.tokens.GetToken(ctx, connect.NewRequest(&brokerv1.GetTokenRequest{
		IrisAppId:       c.irisAppID,
		AccountId:       accountID,
		Scopes:          scopes,
		MinValidSeconds: int32(minValid / time.Second),
	}))
	if err != nil {
		return nil, fmt.Errorf("irisx-broker: token for account %q: %w", accountID, err)
	}
	tok, err := toOAuth2(resp.Msg)
	if err != nil {
		return nil, fmt.Errorf("irisx-broker: token for account %q: %w", accountID, err)
	}
	return tok, nil
}

// APIUserToken returns an access token for the API user registered under
// name with the broker's ApiUserService.
func (c *Client) APIUserToken(ctx context.Context, name string) (*oauth2.Token, error) {
	resp, err := c.tokens.GetApiUserToken(ctx, connect.NewRequest(&brokerv1.GetApiUserTokenRequest{Name: name}))
	if err != nil {
		return nil, fmt.Errorf("irisx-broker: token for API user %q: %w", name, err)
	}
	tok, err := toOAuth2(resp.Msg)
	if err != nil {
		return nil, fmt.Errorf("irisx-broker: token for API user %q: %w", name, err)
	}
	return tok, nil
}

// toOAuth2 converts the broker's answer. A token without an expiry is
// refused rather than passed on, because oauth2 treats a zero Expiry as
// "never expires" and would use it forever.
func toOAuth2(msg *brokerv1.GetTokenResponse) (*oauth2.Token, error) {
	if msg.GetAccessToken() == "" {
		return nil, fmt.Errorf("%w: no access token", errMalformedResponse)
	}
	if !msg.GetExpiresAt().IsValid() {
		return nil, fmt.Errorf("%w: no valid expiry", errMalformedResponse)
	}
	tok := &oauth2.Token{
		AccessToken: msg.GetAccessToken(),
		TokenType:   msg.GetTokenType(),
		Expiry:      msg.GetExpiresAt().AsTime(),
	}
	return tok.WithExtra(map[string]any{"scope": strings.Join(msg.GetScopes(), " ")}), nil
}
