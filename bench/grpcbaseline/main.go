// Command grpcbaseline is the bare gRPC server of the cached-token
// benchmark, a process of its own like the broker: grpc-go's server
// answering every call with the bytes of a file (a protobuf
// GetTokenResponse) and doing nothing else. It shows what a gRPC call
// costs a server on this machine before any work of the broker's.
//
//	grpcbaseline ADDR FILE
package main

import (
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
)

func main() {
	if err := run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "grpcbaseline:", err)
		os.Exit(1)
	}
}

// rawCodec passes message bytes through: the request is not decoded, the
// answer is the file's bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

func run(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: grpcbaseline ADDR FILE")
	}
	answer, err := os.ReadFile(args[2])
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, s grpc.ServerStream) error {
		var req []byte
		if err := s.RecvMsg(&req); err != nil {
			return err
		}
		out := answer
		return s.SendMsg(&out)
	}))
	ln, err := net.Listen("tcp", args[1])
	if err != nil {
		return err
	}
	return srv.Serve(ln)
}
