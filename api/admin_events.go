package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/irisx-broker/irisx-broker/store"
)

// Admin routes of the lifecycle events.
const (
	adminEventsPath    = "/admin/install/events"
	adminRedeliverPath = "/admin/events/redeliver"
	// adminEventsShown is how many of an install's latest events are listed.
	adminEventsShown = 100
)

type adminEvents struct {
	*adminHandler
	d *EventsDeps
}

// registerAdminEvents adds, behind the admin page's Basic auth:
//
//	GET  /admin/install/events     an install's lifecycle events with their delivery state
//	POST /admin/events/redeliver   queue one more delivery (CSRF token required)
func registerAdminEvents(e *echo.Echo, d *EventsDeps, tokens tokenSet, logger *slog.Logger) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &adminEvents{adminHandler: &adminHandler{tokens: tokens, logger: logger}, d: d}
	e.GET(adminEventsPath, h.list, h.auth)
	e.POST(adminRedeliverPath, h.redeliver, h.auth)
}

// adminLifecycle is the data of the lifecycle events page.
type adminLifecycle struct {
	IrisAppID, AccountID string
	Events               []adminLifecycleEvent
	CanRedeliver         bool
	CSRF                 string
	Notice               string
}

type adminLifecycleEvent struct {
	store.LifecycleEvent
	ID string
}

func (h *adminEvents) list(c echo.Context) error {
	return h.page(c, c.QueryParam(paramApp), c.QueryParam(paramAccount), c.QueryParam("notice"))
}

func (h *adminEvents) page(c echo.Context, app, account, notice string) error {
	if app == "" || !isUUID(account) {
		return h.badRequestMsg(c, "irisAppId and a UUID accountId are required")
	}
	account = canonicalUUID(account)
	evs, err := h.d.Store.InstallLifecycleEvents(c.Request().Context(), app, account, adminEventsShown)
	if err != nil {
		return h.renderError(c, "list lifecycle events", err)
	}
	_, password, _ := c.Request().BasicAuth()
	data := adminLifecycle{IrisAppID: app, AccountID: account, CanRedeliver: h.d.Redeliver != nil,
		CSRF: csrfToken(password), Notice: notice}
	for _, ev := range evs {
		data.Events = append(data.Events, adminLifecycleEvent{LifecycleEvent: ev, ID: ev.ID()})
	}
	return h.render(c, http.StatusOK, "lifecycle", data)
}

// redeliver handles the Redeliver button. The form carries a token derived
// from the Basic auth password, which a cross-site page cannot know, and a
// cross-site request (by Sec-Fetch-Site or Origin) is refused outright.
func (h *adminEvents) redeliver(c echo.Context) error {
	req := c.Request()
	_, password, _ := req.BasicAuth()
	if site := req.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return h.forbidden(c)
	}
	if origin := req.Header.Get("Origin"); origin != "" {
		if u, err := url.Parse(origin); err != nil || u.Host != req.Host {
			return h.forbidden(c)
		}
	}
	if !hmac.Equal([]byte(c.FormValue("csrf")), []byte(csrfToken(password))) {
		return h.forbidden(c)
	}
	app, account := c.FormValue(paramApp), c.FormValue(paramAccount)
	seq, err := store.ParseEventID(c.FormValue("id"))
	if err != nil || seq == 0 {
		return h.badRequestMsg(c, "id is not an event id")
	}
	if h.d.Redeliver == nil {
		return h.badRequestMsg(c, "no EVENT_WEBHOOK_URL is configured")
	}
	ev, err := h.d.Redeliver(req.Context(), seq)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return h.badRequestMsg(c, "no such event")
	case err != nil:
		return h.renderError(c, "redeliver event", err)
	}
	h.logger.InfoContext(req.Context(), "admin page: event queued for redelivery", "event_id", ev.ID())
	// Post/redirect/get, so a reload does not queue it again.
	q := url.Values{paramApp: {app}, paramAccount: {account}, "notice": {ev.ID() + " queued for redelivery."}}
	return c.Redirect(http.StatusSeeOther, adminEventsPath+"?"+q.Encode())
}

func (h *adminEvents) forbidden(c echo.Context) error {
	return h.render(c, http.StatusForbidden, "error", adminError{
		Title: "Forbidden", Message: "The form is stale or came from another site; reload the page and try again.", Back: true,
	})
}

// csrfToken is the admin forms' token for a Basic auth password: an HMAC
// under the password, so every replica computes the same one and no page
// of another site can.
func csrfToken(password string) string {
	m := hmac.New(sha256.New, []byte(password))
	m.Write([]byte("irisx-broker admin csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// badRequestMsg shows a validation failure of the events page through the
// admin page's one error renderer.
func (h *adminEvents) badRequestMsg(c echo.Context, msg string) error {
	return h.renderError(c, "admin events", invalidArgument(msg))
}
