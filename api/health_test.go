package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

func TestReadyz(t *testing.T) {
	up := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("no database") }
	yes := func() bool { return true }
	no := func() bool { return false }
	cases := []struct {
		name     string
		h        *healthHandler
		status   int
		mustHave string
	}{
		{"all ready", &healthHandler{ping: up, ready: yes, listening: yes}, 200, `"listener":"connected"`},
		{"no listener to wait for", &healthHandler{ping: up, ready: yes}, 200, `"status":"ready"`},
		{"database down", &healthHandler{ping: down, ready: yes, listening: yes}, 503, `"database":"unavailable"`},
		{"no JWKS", &healthHandler{ping: up, ready: no, listening: yes}, 503, `"jwks":"not_loaded"`},
		{"listener connecting", &healthHandler{ping: up, ready: yes, listening: no}, 503, `"listener":"connecting"`},
	}
	for _, tc := range cases {
		rec := httptest.NewRecorder()
		c := echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/readyz", nil), rec)
		if err := tc.h.readyz(c); err != nil {
			t.Fatal(err)
		}
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.mustHave) {
			t.Errorf("%s: %d %s, want %d with %s", tc.name, rec.Code, rec.Body.String(), tc.status, tc.mustHave)
		}
	}
}
