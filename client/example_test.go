package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/oauth2"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/client"
)

// exampleBroker stands in for irisx-broker's TokenService.
type exampleBroker struct {
	brokerv1connect.UnimplementedTokenServiceHandler
}

func (exampleBroker) GetToken(_ context.Context, req *connect.Request[brokerv1.GetTokenRequest]) (*connect.Response[brokerv1.GetTokenResponse], error) {
	return connect.NewResponse(&brokerv1.GetTokenResponse{
		AccessToken: "token-for-" + req.Msg.GetAccountId(),
		TokenType:   "Bearer",
		ExpiresAt:   timestamppb.New(time.Now().Add(time.Hour)),
		Scopes:      req.Msg.GetScopes(),
	}), nil
}

// Call the IRIS API on behalf of an account that installed the app: the
// oauth2 client fetches the account's token from the broker and reuses it
// until shortly before it expires.
func ExampleClient_TokenSource() {
	mux := http.NewServeMux()
	mux.Handle(brokerv1connect.NewTokenServiceHandler(exampleBroker{}))
	broker := httptest.NewServer(mux)
	defer broker.Close()
	iris := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "IRIS API saw %q", r.Header.Get("Authorization"))
	}))
	defer iris.Close()

	ctx := context.Background()
	c := client.New(broker.URL, "an-internal-api-token", client.WithIrisAppID("@org/app"))
	httpClient := oauth2.NewClient(ctx, c.TokenSource(ctx, "3f0e2f5c", "account.view"))

	resp, err := httpClient.Get(iris.URL + "/api/assets")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(body))
	// Output: IRIS API saw "Bearer token-for-3f0e2f5c"
}

// Fetch one token, and tell the broker's refusals apart by their code.
func ExampleClient_Token() {
	mux := http.NewServeMux()
	mux.Handle(brokerv1connect.NewTokenServiceHandler(exampleBroker{}))
	broker := httptest.NewServer(mux)
	defer broker.Close()

	c := client.New(broker.URL, "an-internal-api-token", client.WithIrisAppID("@org/app"))
	tok, err := c.Token(context.Background(), "3f0e2f5c", "account.view", "asset.view")
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		log.Fatal("the account has not installed the app")
	case connect.CodeFailedPrecondition:
		log.Fatal("the app was uninstalled or its credentials were rejected")
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.Type(), tok.AccessToken, tok.Extra("scope"))
	// Output: Bearer token-for-3f0e2f5c account.view asset.view
}
