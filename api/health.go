package api

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// readinessTimeout bounds the database ping of /readyz so a hung database
// makes the probe fail rather than hang.
const readinessTimeout = 2 * time.Second

type healthResponse struct {
	Status   string `json:"status"`
	Database string `json:"database,omitempty"`
	JWKS     string `json:"jwks,omitempty"`
	Listener string `json:"listener,omitempty"`
}

type healthHandler struct {
	ping      func(ctx context.Context) error
	ready     func() bool
	listening func() bool // nil: no install-change listener to wait for
}

func newHealthHandler(ping func(ctx context.Context) error, v Verifier, listening func() bool) *healthHandler {
	return &healthHandler{ping: ping, ready: v.Ready, listening: listening}
}

// register mounts /healthz and /readyz for GET and HEAD: load balancers
// probe with HEAD.
func (h *healthHandler) register(e *echo.Echo) {
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		e.Add(m, "/healthz", h.healthz)
		e.Add(m, "/readyz", h.readyz)
	}
}

func (h *healthHandler) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, healthResponse{Status: "ok"})
}

// readyz is 200 only when the database answers and a JWKS has been loaded,
// and (where there is one) the install-change listener is connected: it
// flushes the token cache when it connects, so tokens cached before then
// would otherwise vanish under the first callers.
func (h *healthHandler) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readinessTimeout)
	defer cancel()
	resp := healthResponse{Status: "ready", Database: "ok", JWKS: "loaded"}
	code := http.StatusOK
	if err := h.ping(ctx); err != nil {
		resp.Database, resp.Status, code = "unavailable", "not_ready", http.StatusServiceUnavailable
	}
	if !h.ready() {
		resp.JWKS, resp.Status, code = "not_loaded", "not_ready", http.StatusServiceUnavailable
	}
	if h.listening != nil {
		resp.Listener = "connected"
		if !h.listening() {
			resp.Listener, resp.Status, code = "connecting", "not_ready", http.StatusServiceUnavailable
		}
	}
	return c.JSON(code, resp)
}
