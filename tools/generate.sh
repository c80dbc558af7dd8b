#!/bin/sh
# Regenerates the committed Go code under api/gen from api/proto (make
# generate). The tools are pinned here and installed with go install, so the
# output depends only on these versions; protoc-gen-go and
# protoc-gen-connect-go match the google.golang.org/protobuf and
# connectrpc.com/connect versions in go.mod. CI needs none of this: the
# generated code is committed.
set -eu

BUF_VERSION=v1.75.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION=v1.21.1

cd "$(dirname "$0")/.."

bin="$(go env GOPATH)/bin"
GOBIN="$bin" go install "github.com/bufbuild/buf/cmd/buf@${BUF_VERSION}"
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
GOBIN="$bin" go install "connectrpc.com/connect/cmd/protoc-gen-connect-go@${PROTOC_GEN_CONNECT_GO_VERSION}"
# buf finds the local plugins on PATH; put the pinned ones first.
PATH="$bin:$PATH"
export PATH

"$bin/buf" format --write
"$bin/buf" lint
# Remove only generated files, so a deleted .proto leaves nothing stale
# behind while the hand-written tests beside the generated code stay.
find api/gen -type f \( -name '*.pb.go' -o -name '*.connect.go' \) -delete 2>/dev/null || true
"$bin/buf" generate
