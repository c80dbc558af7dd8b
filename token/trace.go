package token

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/irisx-broker/irisx-broker/internal/derrors"
)

// tracerName names the token core's spans' instrumentation scope.
const tracerName = "github.com/irisx-broker/irisx-broker/token"

// startFetch starts the span of one shared fetch (database, lease, upstream
// call): "token.fetch", with the credential kind and, at the end, the
// outcome, nothing else (no id, scope, account or token). It runs on the
// fetch's detached context, which keeps the first caller's span as parent,
// so the upstream call's client span is its child. Without a tracer it
// costs nothing.
func (p *policy) startFetch(ctx context.Context, kind string) (context.Context, func(error)) {
	if p.tracer == nil {
		return ctx, func(error) {}
	}
	ctx, span := p.tracer.Start(ctx, "token.fetch", trace.WithAttributes(attribute.String("irisx.token.kind", kind)))
	return ctx, func(err error) {
		o := outcome(err)
		span.SetAttributes(attribute.String("irisx.token.outcome", o))
		if err != nil {
			span.SetStatus(codes.Error, o) // the class only: error text may quote upstream
		}
		span.End()
	}
}

// outcome is "ok" or the error's class.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, derrors.ErrNotFound):
		return "not_found"
	case errors.Is(err, derrors.ErrInvalid):
		return "invalid"
	case errors.Is(err, derrors.ErrRejected):
		return "rejected"
	case errors.Is(err, derrors.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "unavailable"
	}
	return "internal"
}
