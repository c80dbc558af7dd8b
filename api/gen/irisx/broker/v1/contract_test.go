package brokerv1_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
)

// These tests pin the generated code to CONTRACT.md, so that renaming a
// field in the .proto (which changes the JSON every curl user sees) fails
// here rather than in production.

func jsonNames(m proto.Message) []string {
	fields := m.ProtoReflect().Descriptor().Fields()
	names := make([]string, fields.Len())
	for i := range fields.Len() {
		names[i] = fields.Get(i).JSONName()
	}
	return names
}

func TestJSONNames(t *testing.T) {
	tests := []struct {
		msg  proto.Message
		want []string
	}{
		{&brokerv1.GetTokenRequest{}, []string{"irisAppId", "accountId", "scopes", "minValidSeconds"}},
		{&brokerv1.GetApiUserTokenRequest{}, []string{"name", "minValidSeconds"}},
		{&brokerv1.GetTokenResponse{}, []string{"accessToken", "tokenType", "expiresAt", "scopes"}},
		{&brokerv1.ListInstallsRequest{}, []string{"irisAppId", "status", "pageSize", "pageToken"}},
		{&brokerv1.ListInstallsResponse{}, []string{"installs", "nextPageToken"}},
		{&brokerv1.GetInstallRequest{}, []string{"irisAppId", "accountId"}},
		{&brokerv1.GetInstallResponse{}, []string{"install", "events"}},
		{&brokerv1.Install{}, []string{
			"irisAppId", "accountId", "status", "installedAt", "updatedAt",
			"uninstalledAt", "keyId", "lastTokenAt", "lastError",
		}},
		{&brokerv1.InstallEvent{}, []string{"id", "type", "outcome", "eventAt", "receivedAt", "jti", "remoteAddr"}},
		{&brokerv1.CreateApiUserRequest{}, []string{"name", "username", "password", "clientId", "clientSecret", "scopes"}},
		{&brokerv1.CreateApiUserResponse{}, []string{"apiUser"}},
		{&brokerv1.ListApiUsersRequest{}, []string{}},
		{&brokerv1.ListApiUsersResponse{}, []string{"apiUsers"}},
		{&brokerv1.DeleteApiUserRequest{}, []string{"name"}},
		{&brokerv1.DeleteApiUserResponse{}, []string{}},
		{&brokerv1.ApiUser{}, []string{
			"name", "username", "scopes", "status", "createdAt", "updatedAt", "lastTokenAt", "lastError",
		}},
	}
	for _, tt := range tests {
		name := string(tt.msg.ProtoReflect().Descriptor().FullName())
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, jsonNames(tt.msg)); diff != "" {
				t.Errorf("JSON field names (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGetTokenRequestFromCurlJSON(t *testing.T) {
	// The request body CONTRACT.md shows for curl against the Connect protocol.
	body := `{"irisAppId":"@org/app","accountId":"3f0e2f5c-7c1a-4a53-9a55-1f0c7a3c2b11","scopes":["account.view","asset.view"],"minValidSeconds":600}`
	var got brokerv1.GetTokenRequest
	if err := protojson.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	want := &brokerv1.GetTokenRequest{
		IrisAppId:       "@org/app",
		AccountId:       "3f0e2f5c-7c1a-4a53-9a55-1f0c7a3c2b11",
		Scopes:          []string{"account.view", "asset.view"},
		MinValidSeconds: 600,
	}
	if diff := cmp.Diff(want, &got, protocmp.Transform()); diff != "" {
		t.Errorf("GetTokenRequest (-want +got):\n%s", diff)
	}
}

func TestTimestampsAreRFC3339(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	resp := &brokerv1.GetTokenResponse{
		AccessToken: "tok",
		TokenType:   "Bearer",
		ExpiresAt:   timestamppb.New(at),
		Scopes:      []string{"account.view"},
	}
	b, err := protojson.Marshal(resp)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("protojson output is not JSON: %v", err)
	}
	want := map[string]any{
		"accessToken": "tok",
		"tokenType":   "Bearer",
		"expiresAt":   "2025-03-04T05:06:07Z",
		"scopes":      []any{"account.view"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetTokenResponse JSON (-want +got):\n%s", diff)
	}
}

func TestInstallOmitsAbsentOptionalFields(t *testing.T) {
	at := timestamppb.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	tests := []struct {
		name    string
		install *brokerv1.Install
		want    map[string]any
	}{
		{
			name: "never used",
			install: &brokerv1.Install{
				IrisAppId: "@org/app", AccountId: "a", Status: "installed",
				InstalledAt: at, UpdatedAt: at, KeyId: "k1",
			},
			want: map[string]any{
				"irisAppId": "@org/app", "accountId": "a", "status": "installed",
				"installedAt": "2025-01-02T03:04:05Z", "updatedAt": "2025-01-02T03:04:05Z", "keyId": "k1",
			},
		},
		{
			name: "uninstalled after an error",
			install: &brokerv1.Install{
				IrisAppId: "@org/app", AccountId: "a", Status: "uninstalled",
				InstalledAt: at, UpdatedAt: at, UninstalledAt: at, LastTokenAt: at,
				LastError: proto.String("invalid_client"),
			},
			want: map[string]any{
				"irisAppId": "@org/app", "accountId": "a", "status": "uninstalled",
				"installedAt": "2025-01-02T03:04:05Z", "updatedAt": "2025-01-02T03:04:05Z",
				"uninstalledAt": "2025-01-02T03:04:05Z", "lastTokenAt": "2025-01-02T03:04:05Z",
				"lastError": "invalid_client",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := protojson.Marshal(tt.install)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("protojson output is not JSON: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Install JSON (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIdempotencyLevels(t *testing.T) {
	// NO_SIDE_EFFECTS lets Connect serve the read-only admin calls over HTTP
	// GET. The token calls are only IDEMPOTENT: a GET response carrying an
	// access token could be cached by an intermediary.
	want := map[string]descriptorpb.MethodOptions_IdempotencyLevel{
		"irisx.broker.v1.TokenService.GetToken":        descriptorpb.MethodOptions_IDEMPOTENT,
		"irisx.broker.v1.TokenService.GetApiUserToken": descriptorpb.MethodOptions_IDEMPOTENT,
		"irisx.broker.v1.InstallService.ListInstalls":  descriptorpb.MethodOptions_NO_SIDE_EFFECTS,
		"irisx.broker.v1.InstallService.GetInstall":    descriptorpb.MethodOptions_NO_SIDE_EFFECTS,
		"irisx.broker.v1.ApiUserService.CreateApiUser": descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN,
		"irisx.broker.v1.ApiUserService.ListApiUsers":  descriptorpb.MethodOptions_NO_SIDE_EFFECTS,
		"irisx.broker.v1.ApiUserService.DeleteApiUser": descriptorpb.MethodOptions_IDEMPOTENT,
		"irisx.broker.v1.TokenService.GetApiKeyToken":  descriptorpb.MethodOptions_IDEMPOTENT,
		"irisx.broker.v1.ApiKeyService.CreateApiKey":   descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN,
		"irisx.broker.v1.ApiKeyService.ListApiKeys":    descriptorpb.MethodOptions_NO_SIDE_EFFECTS,
		"irisx.broker.v1.ApiKeyService.DeleteApiKey":   descriptorpb.MethodOptions_IDEMPOTENT,
		"irisx.broker.v1.EventService.ListEvents":      descriptorpb.MethodOptions_NO_SIDE_EFFECTS,
		// A stream is never served over GET; a redelivery queues work.
		"irisx.broker.v1.EventService.WatchEvents":    descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN,
		"irisx.broker.v1.EventService.RedeliverEvent": descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN,
	}
	got := map[string]descriptorpb.MethodOptions_IdempotencyLevel{}
	services := brokerv1.File_irisx_broker_v1_broker_proto.Services()
	for i := range services.Len() {
		methods := services.Get(i).Methods()
		for j := range methods.Len() {
			m := methods.Get(j)
			opts, _ := m.Options().(*descriptorpb.MethodOptions)
			got[string(m.FullName())] = opts.GetIdempotencyLevel()
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("idempotency levels (-want +got):\n%s", diff)
	}
}

// secretFields are the field names that hold a credential.
var secretFields = map[protoreflect.Name]bool{
	"password": true, "client_secret": true, "client_id": true,
	"refresh_token": true, "access_token": true, "secret": true,
}

// TestResponsesCarryNoSecrets walks every message a response can contain:
// only GetTokenResponse may hand out a credential, its access token.
func TestResponsesCarryNoSecrets(t *testing.T) {
	var found []string
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		fields := md.Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			if secretFields[f.Name()] {
				found = append(found, string(f.FullName()))
			}
			if f.Message() != nil {
				walk(f.Message())
			}
		}
	}
	services := brokerv1.File_irisx_broker_v1_broker_proto.Services()
	for i := range services.Len() {
		methods := services.Get(i).Methods()
		for j := range methods.Len() {
			walk(methods.Get(j).Output())
		}
	}
	want := []string{"irisx.broker.v1.GetTokenResponse.access_token"}
	if diff := cmp.Diff(want, found); diff != "" {
		t.Errorf("secret fields in responses (-want +got):\n%s", diff)
	}
}

func TestSecretFieldsAreMarkedDebugRedact(t *testing.T) {
	tests := []struct {
		msg   proto.Message
		field protoreflect.Name
	}{
		{&brokerv1.GetTokenResponse{}, "access_token"},
		{&brokerv1.CreateApiUserRequest{}, "password"},
		{&brokerv1.CreateApiUserRequest{}, "client_secret"},
	}
	for _, tt := range tests {
		f := tt.msg.ProtoReflect().Descriptor().Fields().ByName(tt.field)
		if f == nil {
			t.Errorf("%T has no field %s", tt.msg, tt.field)
			continue
		}
		opts, _ := f.Options().(*descriptorpb.FieldOptions)
		if !opts.GetDebugRedact() {
			t.Errorf("%s lacks [debug_redact = true]", f.FullName())
		}
	}
}
