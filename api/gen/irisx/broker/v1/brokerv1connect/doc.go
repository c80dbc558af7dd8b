// Package brokerv1connect holds the Connect clients and handlers of the
// irisx.broker.v1 services (TokenService, InstallService, ApiUserService),
// generated from api/proto/irisx/broker/v1/broker.proto by
// tools/generate.sh. Only this file is written by hand; edit the .proto and
// regenerate instead of broker.connect.go.
package brokerv1connect
