package api

import (
	"context"
	"errors"
	"net/http"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/labstack/echo/v4"

	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
)

// The gRPC conventions of the internal listener, so grpcurl and a
// Kubernetes grpc probe work without the .proto files:
//
//	/grpc.health.v1.Health/*                      the standard health service, tokenless:
//	                                              SERVING exactly when /readyz answers 200
//	/grpc.reflection.v1.ServerReflection/*        server reflection (v1 and v1alpha), with
//	/grpc.reflection.v1alpha.ServerReflection/*   an internal or an admin bearer token

// grpcServices are the services health and reflection report on.
var grpcServices = []string{
	brokerv1connect.TokenServiceName,
	brokerv1connect.InstallServiceName,
	brokerv1connect.ApiUserServiceName,
}

// mountGRPCConventions adds health and reflection to e. readyz is the
// /readyz handler itself, so the two can never disagree; tokens are who
// may use reflection.
func mountGRPCConventions(e *echo.Echo, readyz echo.HandlerFunc, tokens tokenSet) {
	mount := func(path string, h http.Handler) { e.Any(path+"*", echo.WrapHandler(h)) }
	mount(grpchealth.NewHandler(&readyzChecker{e: e, readyz: readyz}))
	reflector := grpcreflect.NewStaticReflector(append([]string{grpchealth.HealthV1ServiceName}, grpcServices...)...)
	for _, h := range []func(*grpcreflect.Reflector, ...connect.HandlerOption) (string, http.Handler){
		grpcreflect.NewHandlerV1, grpcreflect.NewHandlerV1Alpha,
	} {
		path, handler := h(reflector)
		mount(path, requireBearer(tokens, handler))
	}
}

// readyzChecker answers health checks by running the /readyz handler.
type readyzChecker struct {
	e      *echo.Echo
	readyz echo.HandlerFunc
}

func (c *readyzChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	known := req.Service == ""
	for _, s := range grpcServices {
		known = known || req.Service == s
	}
	if !known {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("unknown service"))
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "/readyz", nil)
	if err != nil {
		return nil, err
	}
	w := &statusRecorder{header: http.Header{}}
	ec := c.e.NewContext(r, w)
	if err := c.readyz(ec); err != nil || w.status() != http.StatusOK {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// statusRecorder keeps a response's status code and drops its body.
type statusRecorder struct {
	header http.Header
	code   int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(b), nil
}
func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
}
func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
