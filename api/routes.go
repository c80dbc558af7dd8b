package api

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/labstack/echo/v4"

	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/crypto"
)

// PublicDeps are what the public listener needs.
type PublicDeps struct {
	Verifier    Verifier
	Store       InstallStore
	AllowedApps []string
	Now         func() time.Time
	Logger      *slog.Logger
	Observer    InstallObserver // optional
	HTTP        HTTPObserver    // optional
	// Listening, if set, reports whether the install-change listener is
	// connected; /readyz waits for it.
	Listening func() bool
	// Profiles, if set, records each identity token's profile (best effort).
	Profiles *ProfileRecorder
}

// NewPublic builds the public listener's handler. These are its only
// routes; everything else is 404.
//
//	POST /appinstall        the Trackunit install callback
//	GET, HEAD /healthz      liveness
//	GET, HEAD /readyz       readiness: database answers and a JWKS is loaded
//
// OPTIONS is 404 on every path, as is any other method.
func NewPublic(d PublicDeps) *echo.Echo {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	e := newEcho(d.Logger, d.HTTP)
	install := &installHandler{verifier: d.Verifier, store: d.Store, allowedApps: d.AllowedApps, now: d.Now, observer: d.Observer, logger: d.Logger, profiles: d.Profiles}
	health := newHealthHandler(d.Store.Ping, d.Verifier, d.Listening)
	e.POST("/appinstall", install.handle)
	health.register(e)
	return e
}

// newEcho is an Echo with our error mapper, request ids and one log line
// per request.
func newEcho(logger *slog.Logger, obs HTTPObserver) *echo.Echo {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = errorHandler(logger)
	e.IPExtractor = echo.ExtractIPDirect()
	e.Pre(refuseOptions)
	e.Use(requestLogger(logger, obs))
	return e
}

// InternalDeps are what the internal listener needs.
type InternalDeps struct {
	Verifier       Verifier
	Store          InternalStore
	Broker         Broker
	Metrics        http.Handler
	InternalTokens []crypto.Secret
	AdminTokens    []crypto.Secret
	AllowedApps    []string
	Logger         *slog.Logger
	HTTP           HTTPObserver // optional
	// Listening: as in PublicDeps.
	Listening func() bool
	// APIUsers and APIUserBroker serve ApiUserService and
	// GetApiUserToken; without them those calls are unimplemented.
	APIUsers      APIUserRegistry
	APIUserBroker APIUserBroker
	// Proxy serves the IRIS API proxy; without it /iris/ is 404.
	Proxy *ProxyDeps
	// Profiles serves /admin/identity; without it that page is 404.
	Profiles ProfileStore
	// APIKeys and APIKeyBroker serve ApiKeyService and GetApiKeyToken.
	APIKeys      APIKeyRegistry
	APIKeyBroker APIKeyBroker
	// Events serves EventService and the admin page's events; nil: neither.
	Events *EventsDeps
	// ConnectInterceptors, if set, run first on every Connect handler
	// (the tracing interceptor, internal/telemetry).
	ConnectInterceptors []connect.Interceptor
}

// InternalStore is what the internal listener reads from the store.
type InternalStore interface {
	InstallReader
	Ping(ctx context.Context) error
}

// NewInternal builds the internal listener's handler. These are all of
// its routes (the public listener's are at NewPublic); everything else is
// 404. Who may call each is in brackets.
//
// Connect services (gRPC over h2c, gRPC-Web and Connect; POST):
//
//	/irisx.broker.v1.TokenService/*         GetToken, GetApiUserToken, GetApiKeyToken [INTERNAL_API_TOKENS]
//	/irisx.broker.v1.InstallService/*       ListInstalls, GetInstall [ADMIN_API_TOKENS]
//	/irisx.broker.v1.ApiUserService/*       CreateApiUser, ListApiUsers, DeleteApiUser [ADMIN_API_TOKENS]
//	/irisx.broker.v1.ApiKeyService/*        CreateApiKey, ListApiKeys, DeleteApiKey [ADMIN_API_TOKENS]
//	/irisx.broker.v1.EventService/*         ListEvents, WatchEvents [either token], RedeliverEvent
//	                                        [ADMIN_API_TOKENS]; only with d.Events
//	/grpc.health.v1.Health/*                gRPC health, SERVING exactly when /readyz is 200 [none]
//	/grpc.reflection.v1.ServerReflection/*, /grpc.reflection.v1alpha.ServerReflection/*
//	                                        server reflection [either token] (api/grpc.go)
//
// The IRIS API proxy (api/proxy.go), only with d.Proxy:
//
//	ANY  /iris/accounts/{accountId}/{path...}   IRIS with the install's token [INTERNAL_API_TOKENS]
//
// The admin pages, HTML behind HTTP Basic (any user, an admin token as the
// password) [ADMIN_API_TOKENS]:
//
//	GET  /admin                    installs: filters and paging (api/admin.go)
//	GET  /admin/install            one install with its latest callbacks (api/admin.go)
//	GET  /admin/identity           identity tokens and callbacks seen, by shape; only with
//	                               d.Profiles (api/admin_identity.go)
//	GET  /admin/install/events     an install's lifecycle events with their webhook delivery
//	                               state; only with d.Events (api/admin_events.go)
//	POST /admin/events/redeliver   queue one more webhook delivery (CSRF token); only with
//	                               d.Events (api/admin_events.go)
//
// Operations [none]:
//
//	GET  /metrics                  Prometheus text format; only with d.Metrics
//	GET, HEAD /healthz, /readyz    as on the public listener
//
// Each Connect service checks its bearer token from the headers before the
// body is read (requireBearer); a request message is at most 1 MiB after
// decompression (connectLimits). OPTIONS is 404 everywhere.
func NewInternal(d InternalDeps) *echo.Echo {
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := newEcho(logger, d.HTTP)
	errs := connect.WithInterceptors(append(slices.Clone(d.ConnectInterceptors), errorInterceptor(logger))...)
	internalTokens, adminTokens := newTokenSet(d.InternalTokens), newTokenSet(d.AdminTokens)
	// Each service is wrapped in the bearer check of its token set, which
	// runs before Connect reads a byte of the body.
	mount := func(tokens tokenSet) func(string, http.Handler) {
		return func(path string, h http.Handler) {
			e.Any(path+"*", echo.WrapHandler(requireBearer(tokens, h)))
		}
	}
	opts := append(connectLimits(), errs)

	encoded := newEncodedTokens() // api/encoded.go
	tokens := &tokenService{broker: d.Broker, allowedApps: d.AllowedApps, apiUsers: d.APIUserBroker, apiKeys: d.APIKeyBroker, encoded: encoded}
	tokenPath, tokenHandler := brokerv1connect.NewTokenServiceHandler(tokens, append(tokenCodecs(encoded), opts...)...)
	if len(d.ConnectInterceptors) == 0 {
		tokenHandler = &fastGetToken{svc: tokens, next: tokenHandler, logger: logger} // api/tokens_fast.go
	}
	mount(internalTokens)(tokenPath, tokenHandler)
	mount(adminTokens)(brokerv1connect.NewInstallServiceHandler(
		&installService{store: d.Store}, opts...))
	mount(adminTokens)(brokerv1connect.NewApiUserServiceHandler(
		&apiUserService{store: d.APIUsers, broker: d.APIUserBroker}, opts...))
	mount(adminTokens)(brokerv1connect.NewApiKeyServiceHandler(
		&apiKeyService{store: d.APIKeys, broker: d.APIKeyBroker}, opts...))

	if d.Proxy != nil {
		mountProxy(e, *d.Proxy, d.InternalTokens, d.AllowedApps, logger)
	}
	mountEvents(e, mount(internalTokens.union(adminTokens)), d.Events, internalTokens, adminTokens, logger,
		append(connectLimits(), connect.WithInterceptors(d.ConnectInterceptors...))...)
	admin := registerAdmin(e, d.Store, adminTokens, logger)
	if d.Profiles != nil {
		e.GET(adminIdentityPath, (&adminIdentityHandler{admin: admin, profiles: d.Profiles}).show, admin.auth)
	}
	health := newHealthHandler(d.Store.Ping, d.Verifier, d.Listening)
	health.register(e)
	mountGRPCConventions(e, health.readyz, internalTokens.union(adminTokens)) // api/grpc.go
	if d.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(d.Metrics))
	}
	return e
}
