package api

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
)

// HTTPObserver records one finished request, for metrics. route is the
// registered path pattern (never the raw URL, which would be unbounded).
type HTTPObserver interface {
	HTTPRequest(route, method string, status int, d time.Duration)
}

// requestLogger gives every request an id, runs it, maps its error, and logs
// one line with id, route, status and latency.
func requestLogger(logger *slog.Logger, obs HTTPObserver) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			id := c.Request().Header.Get(echo.HeaderXRequestID)
			if !validRequestID(id) {
				id = newRequestID()
			}
			// echo.HeaderXRequestID is in canonical form already.
			c.Response().Header()[echo.HeaderXRequestID] = []string{id}
			if err := next(c); err != nil {
				c.Error(err)
			}
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			status := c.Response().Status
			d := time.Since(start)
			if obs != nil {
				obs.HTTPRequest(route, c.Request().Method, status, d)
			}
			// The record goes to the handler directly: Logger.LogAttrs
			// would also walk the stack for the caller's PC, which only a
			// handler with AddSource (serve has none) prints.
			ctx := c.Request().Context()
			if h := logger.Handler(); h.Enabled(ctx, slog.LevelInfo) {
				r := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
				r.AddAttrs(
					slog.String("request_id", id),
					slog.String("method", c.Request().Method),
					slog.String("route", route),
					slog.Int("status", status),
					slog.Duration("latency", d),
					slog.String("remote_addr", remoteHost(c.Request().RemoteAddr)),
				)
				_ = h.Handle(ctx, r)
			}
			return nil
		}
	}
}

// refuseOptions answers OPTIONS with 404 on every path, before routing
// (Echo would answer 204 with an Allow header): the contract lists no
// OPTIONS route, and no browser is meant to call these listeners
// cross-origin.
func refuseOptions(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Request().Method == http.MethodOptions {
			return echo.ErrNotFound
		}
		return next(c)
	}
}

// validRequestID reports whether a caller's X-Request-ID may be kept: 1 to
// 64 characters of [A-Za-z0-9._-], so it is safe in logs and headers.
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Request ids are a per-process random prefix and a counter: unique across
// replicas in practice, and cheaper than random bytes on every request.
var (
	requestIDPrefix = func() string {
		var b [6]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:]) + "-"
	}()
	requestIDSeq atomic.Uint64
)

func newRequestID() string {
	return requestIDPrefix + strconv.FormatUint(requestIDSeq.Add(1), 36)
}
