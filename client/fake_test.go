package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/oauth2"
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
)

// call is one request the fake broker received.
type call struct {
	Protocol      string // connect.ProtocolConnect or connect.ProtocolGRPC
	Authorization string
	Msg           proto.Message
}

// fakeBroker is a TokenService that records its calls and answers from
// respond, which gets the 1-based number of the call.
type fakeBroker struct {
	brokerv1connect.UnimplementedTokenServiceHandler

	respond func(n int) (*brokerv1.GetTokenResponse, error)

	mu    sync.Mutex
	calls []call
}

func (f *fakeBroker) record(peer connect.Peer, h http.Header, msg proto.Message) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{Protocol: peer.Protocol, Authorization: h.Get("Authorization"), Msg: msg})
	return len(f.calls)
}

func (f *fakeBroker) answer(n int) (*connect.Response[brokerv1.GetTokenResponse], error) {
	msg, err := f.respond(n)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(msg), nil
}

func (f *fakeBroker) GetToken(_ context.Context, req *connect.Request[brokerv1.GetTokenRequest]) (*connect.Response[brokerv1.GetTokenResponse], error) {
	return f.answer(f.record(req.Peer(), req.Header(), req.Msg))
}

func (f *fakeBroker) GetApiUserToken(_ context.Context, req *connect.Request[brokerv1.GetApiUserTokenRequest]) (*connect.Response[brokerv1.GetTokenResponse], error) {
	return f.answer(f.record(req.Peer(), req.Header(), req.Msg))
}

func (f *fakeBroker) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// startBroker serves f over HTTP/1.1 and h2c, as the internal listener does,
// so both the Connect and the gRPC protocol reach it.
func startBroker(t *testing.T, f *fakeBroker) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(brokerv1connect.NewTokenServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// protocols are the two wire protocols the client speaks, by the name the
// server reports them under.
var protocols = []struct {
	name string
	opts []Option
}{
	{connect.ProtocolConnect, nil},
	{connect.ProtocolGRPC, []Option{WithGRPC()}},
}

// tokenFields is the comparable part of an oauth2.Token (which has
// unexported fields cmp cannot look into).
type tokenFields struct {
	AccessToken string
	TokenType   string
	Expiry      time.Time
	Scope       any
}

func fieldsOf(tok *oauth2.Token) tokenFields {
	if tok == nil {
		return tokenFields{}
	}
	return tokenFields{
		AccessToken: tok.AccessToken,
		TokenType:   tok.TokenType,
		Expiry:      tok.Expiry,
		Scope:       tok.Extra("scope"),
	}
}
