package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/api"
	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/events"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

type readyVerifier struct{}

func (readyVerifier) Check(context.Context, string) (*identity.Identity, identity.Profile, error) {
	return nil, identity.Profile{}, nil
}
func (readyVerifier) Ready() bool { return true }

type eventsHarness struct {
	st     *store.Store
	srv    *httptest.Server
	client func(token string) brokerv1connect.EventServiceClient
}

func newEventsHarness(t *testing.T, redeliver bool) *eventsHarness {
	t.Helper()
	dbURL := testdb.NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	pool, err := store.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st := store.New(pool, testkit.Keyring(t, testkit.KeySpec))
	stream := events.NewStream(st, nil)
	go stream.Run(ctx)
	go func() { _ = st.Listen(ctx, func(string, string) {}, func() {}, nil) }()
	deps := &api.EventsDeps{Store: st, Watch: stream.Watch}
	if redeliver {
		deps.Redeliver = func(ctx context.Context, seq int64) (store.LifecycleEvent, error) {
			return st.RedeliverEvent(ctx, seq, time.Now())
		}
	}
	srv := httptest.NewServer(api.NewInternal(api.InternalDeps{
		Verifier: readyVerifier{}, Store: st,
		InternalTokens: []crypto.Secret{internalToken}, AdminTokens: []crypto.Secret{adminToken},
		Events: deps,
	}))
	t.Cleanup(srv.Close)
	h := &eventsHarness{st: st, srv: srv}
	h.client = func(token string) brokerv1connect.EventServiceClient {
		return brokerv1connect.NewEventServiceClient(http.DefaultClient, srv.URL,
			connect.WithInterceptors(bearerInterceptor(token)))
	}
	return h
}

func bearerInterceptor(token string) connect.Interceptor { return bearerAuth(token) }

type bearerAuth string

func (b bearerAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if b != "" {
			req.Header().Set("Authorization", "Bearer "+string(b))
		}
		return next(ctx, req)
	}
}

func (b bearerAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if b != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		}
		return conn
	}
}

func (b bearerAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (h *eventsHarness) install(t *testing.T, acct string) {
	t.Helper()
	_, err := h.st.ApplyInstallEvent(context.Background(), store.InstallEvent{Type: store.TypeInstalled,
		IrisAppID: "@acme/app", AccountID: acct, ClientID: "id", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
}

func codeOf(err error) connect.Code { return connect.CodeOf(err) }

func TestEventServiceAuthAndPaging(t *testing.T) {
	t.Parallel()
	h := newEventsHarness(t, false)
	ctx := context.Background()
	for i := range 3 {
		h.install(t, "6f1c0e9a-1b2c-4d3e-8f40-00000000000"+string(rune('1'+i)))
	}
	for _, tok := range []string{"", "wrong"} {
		if _, err := h.client(tok).ListEvents(ctx, connect.NewRequest(&brokerv1.ListEventsRequest{})); codeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("ListEvents with token %q: %v, want unauthenticated", tok, err)
		}
		s, err := h.client(tok).WatchEvents(ctx, connect.NewRequest(&brokerv1.WatchEventsRequest{}))
		if err == nil {
			s.Receive()
			err = s.Err()
		}
		if codeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("WatchEvents with token %q: %v, want unauthenticated", tok, err)
		}
	}
	// Internal and admin tokens both list; pages follow nextAfterId.
	for _, tok := range []string{internalToken, adminToken} {
		resp, err := h.client(tok).ListEvents(ctx, connect.NewRequest(&brokerv1.ListEventsRequest{PageSize: 2}))
		if err != nil {
			t.Fatalf("ListEvents: %v", err)
		}
		if len(resp.Msg.Events) != 2 || resp.Msg.NextAfterId != resp.Msg.Events[1].Id {
			t.Fatalf("page 1: %v", resp.Msg)
		}
		resp2, err := h.client(tok).ListEvents(ctx, connect.NewRequest(&brokerv1.ListEventsRequest{AfterId: resp.Msg.NextAfterId}))
		if err != nil || len(resp2.Msg.Events) != 1 || resp2.Msg.Events[0].Id <= resp.Msg.NextAfterId {
			t.Fatalf("page 2: %v, %v", resp2, err)
		}
		ev := resp2.Msg.Events[0]
		if ev.Type != "install.installed" || ev.Status != "installed" || ev.IrisAppId != "@acme/app" || ev.OccurredAt == nil {
			t.Errorf("event %v", ev)
		}
	}
	if _, err := h.client(internalToken).ListEvents(ctx, connect.NewRequest(&brokerv1.ListEventsRequest{AfterId: "nope"})); codeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("malformed afterId: %v", err)
	}
	// RedeliverEvent: admin only; without a webhook, a failed precondition.
	resp, _ := h.client(adminToken).ListEvents(ctx, connect.NewRequest(&brokerv1.ListEventsRequest{}))
	id := resp.Msg.Events[0].Id
	if _, err := h.client(internalToken).RedeliverEvent(ctx, connect.NewRequest(&brokerv1.RedeliverEventRequest{Id: id})); codeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("RedeliverEvent with an internal token: %v, want unauthenticated", err)
	}
	if _, err := h.client(adminToken).RedeliverEvent(ctx, connect.NewRequest(&brokerv1.RedeliverEventRequest{Id: id})); codeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("RedeliverEvent without a webhook: %v, want failed_precondition", err)
	}
}

func TestEventServiceRedeliverAndWatch(t *testing.T) {
	t.Parallel()
	h := newEventsHarness(t, true)
	// A store with a (no-op) enqueuer, as with a webhook configured.
	h.st.SetEventEnqueuer(func(context.Context, pgx.Tx, store.InstallKey) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h.install(t, "6f1c0e9a-1b2c-4d3e-8f40-000000000001")
	if _, err := h.client(adminToken).RedeliverEvent(ctx, connect.NewRequest(&brokerv1.RedeliverEventRequest{Id: store.FormatEventID(999)})); codeOf(err) != connect.CodeNotFound {
		t.Errorf("RedeliverEvent of an unknown id: %v, want not_found", err)
	}
	stream, err := h.client(internalToken).WatchEvents(ctx, connect.NewRequest(&brokerv1.WatchEventsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("no replayed event: %v", stream.Err())
	}
	first := stream.Msg().Event
	h.install(t, "6f1c0e9a-1b2c-4d3e-8f40-000000000002")
	if !stream.Receive() {
		t.Fatalf("no new event: %v", stream.Err())
	}
	if second := stream.Msg().Event; second.Id <= first.Id || second.AccountId != "6f1c0e9a-1b2c-4d3e-8f40-000000000002" {
		t.Errorf("second event %v after %v", second, first)
	}
	resp, err := h.client(adminToken).RedeliverEvent(ctx, connect.NewRequest(&brokerv1.RedeliverEventRequest{Id: first.Id}))
	if err != nil || resp.Msg.Event.Id != first.Id {
		t.Fatalf("RedeliverEvent: %v, %v", resp, err)
	}
}
