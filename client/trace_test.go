package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// The caller's trace context goes with every call, over both protocols,
// so the broker's spans join the caller's trace; without one, no
// traceparent is invented.
func TestPropagatesTraceContext(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	const want = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			broker := &fakeBroker{respond: okResponse("tok-1")}
			mux := http.NewServeMux()
			mux.Handle(brokerv1connect.NewTokenServiceHandler(broker))
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				got = append(got, r.Header.Get("traceparent"))
				mu.Unlock()
				mux.ServeHTTP(w, r)
			}))
			var p http.Protocols
			p.SetHTTP1(true)
			p.SetUnencryptedHTTP2(true)
			srv.Config.Protocols = &p
			srv.Start()
			t.Cleanup(srv.Close)
			c := New(srv.URL, "internal-secret", append(proto.opts, WithIrisAppID("@org/app"))...)

			ctx := trace.ContextWithSpanContext(testkit.Context(t), parent)
			if _, err := c.Token(ctx, "acc-1"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Token(context.WithoutCancel(testkit.Context(t)), "acc-1"); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 2 || got[0] != want || got[1] != "" {
				t.Errorf("traceparent headers %q, want [%q \"\"]", got, want)
			}
		})
	}
}
