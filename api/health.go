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
}

type healthHandler struct {
	ping  func(ctx context.Context) error
	ready func() bool
}

func (h *healthHandler) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, healthResponse{Status: "ok"})
}

// readyz is 200 only when the database answers and a JWKS has been loaded.
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
	return c.JSON(code, resp)
}
