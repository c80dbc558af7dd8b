package telemetry

import (
	"context"
	"net/http"
	"sync/atomic"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"
)

// On the internal listener the server span of a Connect call is started by
// the interceptor, deep inside the handler, while the request log line is
// written by the Echo middleware around it, after the handler returned
// (and the span ended). LogSlot and the interceptor ConnectInterceptor
// returns join the two without a second server span per call: LogSlot puts
// an empty slot in the request's context, the interceptor records its
// span's context there, and LogHandler reads it for records logged with
// the request's context (trace_id of the Connect span, even once it ended).

type slotKey struct{}

type spanSlot struct {
	sc atomic.Pointer[trace.SpanContext]
}

// LogSlot wraps the internal listener's handler so that its request log
// line carries the trace_id of the Connect call's span.
func LogSlot(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), slotKey{}, &spanSlot{})))
	})
}

// slotted is the span context recorded in ctx's slot, if any.
func slotted(ctx context.Context) (trace.SpanContext, bool) {
	s, _ := ctx.Value(slotKey{}).(*spanSlot)
	if s == nil {
		return trace.SpanContext{}, false
	}
	sc := s.sc.Load()
	if sc == nil || !sc.IsSampled() {
		return trace.SpanContext{}, false
	}
	return *sc, true
}

// record puts the recording span of ctx into ctx's slot.
func record(ctx context.Context) {
	s, _ := ctx.Value(slotKey{}).(*spanSlot)
	if s == nil {
		return
	}
	if sp := trace.SpanFromContext(ctx); sp.IsRecording() {
		sc := sp.SpanContext()
		s.sc.Store(&sc)
	}
}

// slotInterceptor runs just inside otelconnect's and records its span.
type slotInterceptor struct{ otel connect.Interceptor }

func (i slotInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return i.otel.WrapUnary(func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		record(ctx)
		return next(ctx, req)
	})
}

func (i slotInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return i.otel.WrapStreamingClient(next)
}

func (i slotInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return i.otel.WrapStreamingHandler(func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		record(ctx)
		return next(ctx, conn)
	})
}
