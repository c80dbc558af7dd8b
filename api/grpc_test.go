//lint:file-ignore SA1019 reflection v1alpha is deprecated, but older grpcurl releases still ask for it, so the test must speak it
package api_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// grpcConn is a real gRPC client (as grpcurl and the kubelet's grpc probe
// are) over h2c to the harness's internal listener.
func grpcConn(t *testing.T, h *harness) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(h.internal.URL, "http://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func withBearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// The standard health service answers without a token: SERVING while
// /readyz is 200, NOT_SERVING while the database is down, NotFound for a
// service the broker does not have.
func TestGRPCHealth(t *testing.T) {
	t.Parallel()
	h, proxy := newProxiedHarness(t)
	health := healthpb.NewHealthClient(grpcConn(t, h))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := func(service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		return resp.GetStatus(), err
	}
	for _, svc := range []string{"", "irisx.broker.v1.TokenService"} {
		if st, err := check(svc); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, %v; want SERVING", svc, st, err)
		}
	}
	if _, err := check("no.such.Service"); status.Code(err) != codes.NotFound {
		t.Errorf("Check(unknown service) error %v, want NotFound", err)
	}

	proxy.Block()
	if st, err := check(""); err != nil || st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("database down: Check = %v, %v; want NOT_SERVING", st, err)
	}
	proxy.Unblock()
	testkit.WaitFor(t, "Check to answer SERVING again with the database back", func() bool {
		st, err := check("")
		return err == nil && st == healthpb.HealthCheckResponse_SERVING
	})
}

// Reflection (v1 and v1alpha) lists and describes the services to a
// caller with an internal or an admin token, and refuses one without.
func TestGRPCReflection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	conn := grpcConn(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	v1 := reflectionv1.NewServerReflectionClient(conn)
	ask := func(ctx context.Context, req *reflectionv1.ServerReflectionRequest) (*reflectionv1.ServerReflectionResponse, error) {
		stream, err := v1.ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		// A server that refuses at once ends the stream before the send;
		// grpc-go then reports io.EOF from Send and the status from Recv.
		if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp, err := stream.Recv()
		_ = stream.CloseSend()
		return resp, err
	}
	list := &reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}

	for _, tok := range []string{"", "wrong-token"} {
		c := ctx
		if tok != "" {
			c = withBearer(ctx, tok)
		}
		if _, err := ask(c, list); status.Code(err) != codes.Unauthenticated {
			t.Errorf("reflection with token %q: error %v, want Unauthenticated", tok, err)
		}
	}

	resp, err := ask(withBearer(ctx, internalToken), list)
	if err != nil {
		t.Fatalf("ListServices with the internal token: %v", err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"irisx.broker.v1.TokenService", "irisx.broker.v1.InstallService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("ListServices = %v, missing %s", names, want)
		}
	}

	resp, err = ask(withBearer(ctx, adminToken), &reflectionv1.ServerReflectionRequest{
		MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "irisx.broker.v1.TokenService"}})
	if err != nil {
		t.Fatalf("FileContainingSymbol with the admin token: %v", err)
	}
	var methods []string
	for _, raw := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(raw, &fd); err != nil {
			t.Fatal(err)
		}
		for _, svc := range fd.GetService() {
			if fd.GetPackage()+"."+svc.GetName() == "irisx.broker.v1.TokenService" {
				for _, m := range svc.GetMethod() {
					methods = append(methods, m.GetName())
				}
			}
		}
	}
	if !slices.Contains(methods, "GetToken") {
		t.Errorf("TokenService described with methods %v, want GetToken among them", methods)
	}

	// v1alpha, which older grpcurl releases ask for.
	alpha, err := reflectionv1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(withBearer(ctx, internalToken))
	if err != nil {
		t.Fatal(err)
	}
	if err := alpha.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	aresp, err := alpha.Recv()
	if err != nil || len(aresp.GetListServicesResponse().GetService()) == 0 {
		t.Errorf("v1alpha ListServices: %v, %v", aresp, err)
	}
	_ = alpha.CloseSend()
	noTok, err := reflectionv1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err == nil {
		_ = noTok.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}})
		_, err = noTok.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("v1alpha without a token: %v, want Unauthenticated", err)
	}
}
