// Package brokerv1 holds the protobuf messages of the irisx.broker.v1 internal
// API, generated from api/proto/irisx/broker/v1/broker.proto by
// tools/generate.sh. Only this file and the tests beside it are written by
// hand; edit the .proto and regenerate instead of the .pb.go files.
package brokerv1
