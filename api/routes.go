package api

import (
	"context"
	"log/slog"
	"net/http"
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
}

// NewPublic builds the public listener's handler. These are its only
// routes; everything else is 404.
//
//	POST /appinstall   the Trackunit install callback
//	GET  /healthz      liveness
//	GET  /readyz       readiness: database answers and a JWKS is loaded
func NewPublic(d PublicDeps) *echo.Echo {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	e := newEcho(d.Logger, d.HTTP)
	install := &installHandler{verifier: d.Verifier, store: d.Store, allowedApps: d.AllowedApps, now: d.Now, observer: d.Observer, logger: d.Logger}
	health := newHealthHandler(d.Store.Ping, d.Verifier, d.Listening)
	e.POST("/appinstall", install.handle)
	e.GET("/healthz", health.healthz)
	e.GET("/readyz", health.readyz)
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
	// Events serves EventService and the admin page's events; nil: neither.
	Events *EventsDeps
}

// InternalStore is what the internal listener reads from the store.
type InternalStore interface {
	InstallReader
	Ping(ctx context.Context) error
}

// NewInternal builds the internal listener's handler:
//
//	POST /irisx.broker.v1.TokenService/*    GetToken, GetApiUserToken (INTERNAL_API_TOKENS)
//	POST /irisx.broker.v1.InstallService/*  ListInstalls, GetInstall (ADMIN_API_TOKENS)
//	POST /irisx.broker.v1.ApiUserService/*  CreateApiUser, ListApiUsers, DeleteApiUser (ADMIN_API_TOKENS)
//	POST /irisx.broker.v1.EventService/*    ListEvents, WatchEvents (either token), RedeliverEvent (ADMIN_API_TOKENS)
//	GET  /admin                             installs page: filters, paging (HTTP Basic, ADMIN_API_TOKENS)
//	GET  /admin/install                     one install with its latest events
//	GET  /admin/install/events              its lifecycle events with webhook delivery state
//	POST /admin/events/redeliver            queue one more webhook delivery (CSRF token)
//	GET  /metrics                           Prometheus text format
//	GET  /healthz, /readyz                  as on the public listener
//
// The Connect handlers speak gRPC (h2c), gRPC-Web and Connect.
func NewInternal(d InternalDeps) *echo.Echo {
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := newEcho(logger, d.HTTP)
	errs := errorInterceptor(logger)
	internalAuth := authInterceptor(newTokenSet(d.InternalTokens))
	adminAuth := authInterceptor(newTokenSet(d.AdminTokens))
	mount := func(path string, h http.Handler) { e.Any(path+"*", echo.WrapHandler(h)) }

	mount(brokerv1connect.NewTokenServiceHandler(
		&tokenService{broker: d.Broker, allowedApps: d.AllowedApps, apiUsers: d.APIUserBroker},
		connect.WithInterceptors(internalAuth, errs)))
	mount(brokerv1connect.NewInstallServiceHandler(
		&installService{store: d.Store},
		connect.WithInterceptors(adminAuth, errs)))
	mount(brokerv1connect.NewApiUserServiceHandler(
		&apiUserService{store: d.APIUsers, broker: d.APIUserBroker},
		connect.WithInterceptors(adminAuth, errs)))

	mountEvents(e, mount, d.Events, newTokenSet(d.InternalTokens), newTokenSet(d.AdminTokens), logger)
	registerAdmin(e, d.Store, newTokenSet(d.AdminTokens), logger)
	health := newHealthHandler(d.Store.Ping, d.Verifier, d.Listening)
	e.GET("/healthz", health.healthz)
	e.GET("/readyz", health.readyz)
	if d.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(d.Metrics))
	}
	return e
}
