package telemetry

import (
	"context"
	"errors"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
)

// PgxTracerWrapper is otelpgx's tracer with every error passed on as its
// SQLSTATE only: a Postgres message such as `invalid input syntax for type
// uuid: "…"` quotes the value, and the span would record it. Statements
// run outside any trace make no span (orphan).
type PgxTracerWrapper struct{ t *otelpgx.Tracer }

var (
	_ pgx.QueryTracer       = (*PgxTracerWrapper)(nil)
	_ pgx.BatchTracer       = (*PgxTracerWrapper)(nil)
	_ pgx.CopyFromTracer    = (*PgxTracerWrapper)(nil)
	_ pgx.PrepareTracer     = (*PgxTracerWrapper)(nil)
	_ pgx.ConnectTracer     = (*PgxTracerWrapper)(nil)
	_ pgxpool.AcquireTracer = (*PgxTracerWrapper)(nil)
)

// sqlError stands for a Postgres error in a span: class and code, no text.
type sqlError struct{ code string }

func (e sqlError) Error() string { return "postgres error SQLSTATE " + e.code }

func safeErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return sqlError{code: pgErr.Code}
	}
	return err
}

// TraceQueryStart implements pgx.QueryTracer.
func (w *PgxTracerWrapper) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if orphan(ctx) {
		return ctx
	}
	return w.t.TraceQueryStart(ctx, conn, data)
}

// TraceQueryEnd implements pgx.QueryTracer.
func (w *PgxTracerWrapper) TraceQueryEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryEndData) {
	data.Err = safeErr(data.Err)
	w.t.TraceQueryEnd(ctx, conn, data)
}

// TraceBatchStart implements pgx.BatchTracer.
func (w *PgxTracerWrapper) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	if orphan(ctx) {
		return ctx
	}
	return w.t.TraceBatchStart(ctx, conn, data)
}

// TraceBatchQuery implements pgx.BatchTracer.
func (w *PgxTracerWrapper) TraceBatchQuery(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchQueryData) {
	data.Err = safeErr(data.Err)
	w.t.TraceBatchQuery(ctx, conn, data)
}

// TraceBatchEnd implements pgx.BatchTracer.
func (w *PgxTracerWrapper) TraceBatchEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchEndData) {
	data.Err = safeErr(data.Err)
	w.t.TraceBatchEnd(ctx, conn, data)
}

// TraceCopyFromStart implements pgx.CopyFromTracer.
func (w *PgxTracerWrapper) TraceCopyFromStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	if orphan(ctx) {
		return ctx
	}
	return w.t.TraceCopyFromStart(ctx, conn, data)
}

// TraceCopyFromEnd implements pgx.CopyFromTracer.
func (w *PgxTracerWrapper) TraceCopyFromEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromEndData) {
	data.Err = safeErr(data.Err)
	w.t.TraceCopyFromEnd(ctx, conn, data)
}

// TracePrepareStart implements pgx.PrepareTracer.
func (w *PgxTracerWrapper) TracePrepareStart(ctx context.Context, conn *pgx.Conn, data pgx.TracePrepareStartData) context.Context {
	if orphan(ctx) {
		return ctx
	}
	return w.t.TracePrepareStart(ctx, conn, data)
}

// TracePrepareEnd implements pgx.PrepareTracer.
func (w *PgxTracerWrapper) TracePrepareEnd(ctx context.Context, conn *pgx.Conn, data pgx.TracePrepareEndData) {
	data.Err = safeErr(data.Err)
	w.t.TracePrepareEnd(ctx, conn, data)
}

// TraceConnectStart implements pgx.ConnectTracer.
func (w *PgxTracerWrapper) TraceConnectStart(ctx context.Context, data pgx.TraceConnectStartData) context.Context {
	if orphan(ctx) {
		return ctx
	}
	return w.t.TraceConnectStart(ctx, data)
}

// TraceConnectEnd implements pgx.ConnectTracer.
func (w *PgxTracerWrapper) TraceConnectEnd(ctx context.Context, data pgx.TraceConnectEndData) {
	data.Err = safeErr(data.Err)
	w.t.TraceConnectEnd(ctx, data)
}

// TraceAcquireStart implements pgxpool.AcquireTracer.
func (w *PgxTracerWrapper) TraceAcquireStart(ctx context.Context, pool *pgxpool.Pool, data pgxpool.TraceAcquireStartData) context.Context {
	if orphan(ctx) {
		return ctx
	}
	return w.t.TraceAcquireStart(ctx, pool, data)
}

// TraceAcquireEnd implements pgxpool.AcquireTracer.
func (w *PgxTracerWrapper) TraceAcquireEnd(ctx context.Context, pool *pgxpool.Pool, data pgxpool.TraceAcquireEndData) {
	data.Err = safeErr(data.Err)
	w.t.TraceAcquireEnd(ctx, pool, data)
}

// orphan reports whether ctx is outside any trace: the statements of
// background work (result flushes, leases, start-up checks) and the pool's
// own connects make no span, rather than a root trace of one SQL span each.
func orphan(ctx context.Context) bool { return !trace.SpanContextFromContext(ctx).IsValid() }

// InstrumentPool sets the tracer on a pool config before pgxpool.NewWithConfig.
func InstrumentPool(cfg *pgxpool.Config, w *PgxTracerWrapper) {
	cfg.ConnConfig.Tracer = w
}
