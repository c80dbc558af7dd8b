package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/internal/logwriter"
	"github.com/irisx-broker/irisx-broker/internal/service"
)

func runServe(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	migrate := fs.Bool("migrate", true, "apply pending migrations at start")
	if err := fs.Parse(args); err != nil {
		return errReported
	}
	cfg, err := config.Load(ctx, lookup, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errReported
	}
	// serve's lines (one per request) are buffered for at most
	// logwriter.FlushDelay and all written out when serve returns.
	lw := logwriter.New(stderr)
	defer func() { _ = lw.Close() }()
	logger := newLogger(cfg, lw)
	logger = slog.New(logwriter.Handler(logger.Handler(), lw))
	return serve(ctx, cfg, serveOptions{migrate: *migrate, logger: logger, lookup: lookup, traceOutput: stdout})
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// serveOptions are what serve takes besides the configuration.
type serveOptions struct {
	migrate bool
	logger  *slog.Logger
	// onListening, if set, is told the bound addresses once both listeners
	// accept connections (tests bind port 0; dev prints ready commands).
	onListening func(public, internal string)
	// verifierHTTP and authHTTP replace the outbound clients (dev, tests).
	verifierHTTP *http.Client
	authHTTP     *http.Client
	// lookup reads the OTEL_* variables; traceOutput receives the spans
	// of OTEL_TRACES_EXPORTER=console (the command's stdout).
	lookup      env
	traceOutput io.Writer
}

// serve runs the service until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, cfg *config.Config, o serveOptions) error {
	svc, err := service.New(ctx, cfg, service.Deps{
		Logger: o.logger, Migrate: o.migrate, OnListening: o.onListening,
		TokenHTTP: o.authHTTP, JWKSHTTP: o.verifierHTTP,
		Lookup: o.lookup, TraceOutput: o.traceOutput,
	})
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
