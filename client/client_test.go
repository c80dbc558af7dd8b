package client

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

var expiry = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func okResponse(token string, scopes ...string) func(int) (*brokerv1.GetTokenResponse, error) {
	return func(int) (*brokerv1.GetTokenResponse, error) {
		return &brokerv1.GetTokenResponse{
			AccessToken: token,
			TokenType:   "Bearer",
			ExpiresAt:   timestamppb.New(expiry),
			Scopes:      scopes,
		}, nil
	}
}

func TestToken(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			broker := &fakeBroker{respond: okResponse("tok-1", "account.view", "asset.view")}
			srv := startBroker(t, broker)
			c := New(srv.URL, "internal-secret", append(proto.opts, WithIrisAppID("@org/app"))...)

			tok, err := c.Token(testkit.Context(t), "acc-1", "account.view", "asset.view")
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			want := tokenFields{AccessToken: "tok-1", TokenType: "Bearer", Expiry: expiry, Scope: "account.view asset.view"}
			if diff := cmp.Diff(want, fieldsOf(tok)); diff != "" {
				t.Errorf("token (-want +got):\n%s", diff)
			}
			wantCalls := []call{{
				Protocol:      proto.name,
				Authorization: "Bearer internal-secret",
				Msg: &brokerv1.GetTokenRequest{
					IrisAppId: "@org/app",
					AccountId: "acc-1",
					Scopes:    []string{"account.view", "asset.view"},
				},
			}}
			if diff := cmp.Diff(wantCalls, broker.Calls(), protocmp.Transform()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTokenWithoutAppIDOrScopes(t *testing.T) {
	// The broker fills in its one allowed app and DEFAULT_SCOPES, so the
	// client must send both empty rather than invent values.
	broker := &fakeBroker{respond: okResponse("tok-1", "account.view")}
	srv := startBroker(t, broker)
	c := New(srv.URL, "internal-secret")

	if _, err := c.Token(testkit.Context(t), "acc-1"); err != nil {
		t.Fatalf("Token: %v", err)
	}
	want := []proto.Message{&brokerv1.GetTokenRequest{AccountId: "acc-1"}}
	var got []proto.Message
	for _, c := range broker.Calls() {
		got = append(got, c.Msg)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestAPIUserToken(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			broker := &fakeBroker{respond: okResponse("user-tok", "api", "offline_access")}
			srv := startBroker(t, broker)
			c := New(srv.URL, "internal-secret", proto.opts...)

			tok, err := c.APIUserToken(testkit.Context(t), "reporting")
			if err != nil {
				t.Fatalf("APIUserToken: %v", err)
			}
			want := tokenFields{AccessToken: "user-tok", TokenType: "Bearer", Expiry: expiry, Scope: "api offline_access"}
			if diff := cmp.Diff(want, fieldsOf(tok)); diff != "" {
				t.Errorf("token (-want +got):\n%s", diff)
			}
			wantCalls := []call{{
				Protocol:      proto.name,
				Authorization: "Bearer internal-secret",
				Msg:           &brokerv1.GetApiUserTokenRequest{Name: "reporting"},
			}}
			if diff := cmp.Diff(wantCalls, broker.Calls(), protocmp.Transform()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestErrorsKeepConnectCode(t *testing.T) {
	codes := []connect.Code{
		connect.CodeUnauthenticated,
		connect.CodeNotFound,
		connect.CodeFailedPrecondition,
		connect.CodeInvalidArgument,
		connect.CodeUnavailable,
	}
	for _, proto := range protocols {
		for _, code := range codes {
			t.Run(proto.name+"/"+code.String(), func(t *testing.T) {
				broker := &fakeBroker{respond: func(int) (*brokerv1.GetTokenResponse, error) {
					return nil, connect.NewError(code, errors.New("refused"))
				}}
				srv := startBroker(t, broker)
				c := New(srv.URL, "internal-secret", proto.opts...)
				ctx := testkit.Context(t)

				_, err := c.Token(ctx, "acc-1", "account.view")
				if got := connect.CodeOf(err); got != code {
					t.Errorf("Token: code %v, want %v (err %v)", got, code, err)
				}
				_, err = c.APIUserToken(ctx, "reporting")
				if got := connect.CodeOf(err); got != code {
					t.Errorf("APIUserToken: code %v, want %v (err %v)", got, code, err)
				}
				_, err = c.TokenSource(ctx, "acc-1").Token()
				if got := connect.CodeOf(err); got != code {
					t.Errorf("TokenSource: code %v, want %v (err %v)", got, code, err)
				}
			})
		}
	}
}

func TestMalformedResponse(t *testing.T) {
	tests := []struct {
		name string
		resp *brokerv1.GetTokenResponse
	}{
		{"no access token", &brokerv1.GetTokenResponse{TokenType: "Bearer", ExpiresAt: timestamppb.New(expiry)}},
		{"no expiry", &brokerv1.GetTokenResponse{AccessToken: "tok", TokenType: "Bearer"}},
		{"invalid expiry", &brokerv1.GetTokenResponse{AccessToken: "tok", ExpiresAt: &timestamppb.Timestamp{Nanos: -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broker := &fakeBroker{respond: func(int) (*brokerv1.GetTokenResponse, error) { return tt.resp, nil }}
			srv := startBroker(t, broker)
			c := New(srv.URL, "internal-secret")

			tok, err := c.Token(testkit.Context(t), "acc-1")
			if !errors.Is(err, errMalformedResponse) {
				t.Errorf("Token = %v, %v; want errMalformedResponse", tok, err)
			}
		})
	}
}

// TestOAuth2Client checks the TokenSource end to end: oauth2.NewClient puts
// the broker's token on requests to a second server standing in for the
// IRIS API, and a broker error reaches the caller with its code.
func TestOAuth2Client(t *testing.T) {
	broker := &fakeBroker{respond: func(n int) (*brokerv1.GetTokenResponse, error) {
		if n == 1 {
			return okResponse("tok-1")(n)
		}
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("no"))
	}}
	srv := startBroker(t, broker)
	seen := make(chan string, 10)
	iris := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Authorization")
	}))
	t.Cleanup(iris.Close)
	ctx := testkit.Context(t)
	c := New(srv.URL, "internal-secret")

	httpClient := oauth2.NewClient(ctx, c.TokenSource(ctx, "acc-1", "account.view"))
	for range 2 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, iris.URL+"/api/assets", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("GET through oauth2 client: %v", err)
		}
		_ = resp.Body.Close()
		if got := <-seen; got != "Bearer tok-1" {
			t.Errorf("IRIS API saw Authorization %q, want %q", got, "Bearer tok-1")
		}
	}
	if n := len(broker.Calls()); n != 1 {
		t.Errorf("broker called %d times for two requests, want 1", n)
	}

	// A fresh source must ask the broker, which now refuses.
	failing := oauth2.NewClient(ctx, c.TokenSource(ctx, "acc-2"))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, iris.URL+"/api/assets", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := failing.Do(req)
	if err == nil {
		_ = resp.Body.Close()
		t.Fatal("GET succeeded although the broker refused the token")
	}
	if got := connect.CodeOf(err); got != connect.CodePermissionDenied {
		t.Errorf("code %v, want %v (err %v)", got, connect.CodePermissionDenied, err)
	}
	if len(seen) != 0 {
		t.Errorf("a request reached the IRIS API without a token")
	}
}
