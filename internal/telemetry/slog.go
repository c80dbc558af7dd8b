package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// LogHandler wraps h so that a record logged with a context carrying a
// recording span gets trace_id (and span_id), which joins the request log
// line to its trace. With tracing off no span records, so nothing is added.
func LogHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (t traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx == nil {
		return t.Handler.Handle(ctx, r)
	}
	sc, ok := trace.SpanContext{}, false
	if sp := trace.SpanFromContext(ctx); sp.IsRecording() {
		sc, ok = sp.SpanContext(), true
	} else {
		sc, ok = slotted(ctx)
	}
	if ok {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return t.Handler.Handle(ctx, r)
}

func (t traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{t.Handler.WithAttrs(as)}
}

func (t traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{t.Handler.WithGroup(name)}
}
