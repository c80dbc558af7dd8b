package service_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	connectrpc "connectrpc.com/connect"
	"github.com/google/uuid"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/service"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// A token endpoint answering 307 gets neither the client secret nor an API
// user's password forwarded to the redirect's target: for every kind
// (/apptoken, /token, /token/v2) the call fails unavailable, the target
// receives nothing, and the redirect is not retried there.
func TestTokenEndpointsFollowNoRedirect(t *testing.T) {
	var reached atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached.Add(1) }))
	defer target.Close()
	var redirected atomic.Int32
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected.Add(1)
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	sim := newTracedSim(t)
	svc := startTraced(t, sim, &testkit.Buffer{}, service.Deps{}, func(c *config.Config) { c.AuthURL = redirector.URL })
	ctx := context.Background()

	account := uuid.NewString()
	id, secret := trackunitsim.NewClientCredentials()
	if _, err := svc.Store.ApplyInstallEvent(ctx, store.InstallEvent{Type: store.TypeInstalled, IrisAppID: testApp, AccountID: account,
		ClientID: crypto.Secret(id), ClientSecret: secret}); err != nil {
		t.Fatal(err)
	}
	userID, userSecret := trackunitsim.NewClientCredentials()
	if _, err := svc.Store.CreateAPIUser(ctx, store.NewAPIUser{Name: "ops", Username: "ops@example.com",
		Password: "a-password-never-forwarded", ClientID: crypto.Secret(userID), ClientSecret: userSecret}); err != nil {
		t.Fatal(err)
	}
	keyID, keySecret := trackunitsim.NewClientCredentials()
	if _, err := svc.Store.CreateAPIKey(ctx, store.NewAPIKey{Name: "reports", ClientID: crypto.Secret(keyID),
		ClientSecret: keySecret, Scopes: []string{"asset.view"}}); err != nil {
		t.Fatal(err)
	}

	tokens := brokerv1connect.NewTokenServiceClient(http.DefaultClient, "http://"+svc.InternalAddr())
	call := func(name string, do func(context.Context) error) {
		t.Helper()
		before := redirected.Load()
		err := do(ctx)
		var ce *connectrpc.Error
		if !errors.As(err, &ce) || ce.Code() != connectrpc.CodeUnavailable {
			t.Errorf("%s through a redirecting token endpoint: %v, want unavailable", name, err)
		}
		if n := redirected.Load() - before; n == 0 {
			t.Errorf("%s: the token endpoint was never asked", name)
		}
	}
	bearer := func(r connectrpc.AnyRequest) { r.Header().Set("Authorization", "Bearer "+traceBearer) }
	call("GetToken", func(ctx context.Context) error {
		r := connectrpc.NewRequest(&brokerv1.GetTokenRequest{AccountId: account})
		bearer(r)
		_, err := tokens.GetToken(ctx, r)
		return err
	})
	call("GetApiUserToken", func(ctx context.Context) error {
		r := connectrpc.NewRequest(&brokerv1.GetApiUserTokenRequest{Name: "ops"})
		bearer(r)
		_, err := tokens.GetApiUserToken(ctx, r)
		return err
	})
	call("GetApiKeyToken", func(ctx context.Context) error {
		r := connectrpc.NewRequest(&brokerv1.GetApiKeyTokenRequest{Name: "reports"})
		bearer(r)
		_, err := tokens.GetApiKeyToken(ctx, r)
		return err
	})
	if n := reached.Load(); n != 0 {
		t.Errorf("the redirect target received %d requests, want 0", n)
	}
}
