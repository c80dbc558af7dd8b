package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/store"
)

// maxInstallBody is the contract's cap on the callback body.
const maxInstallBody = 64 << 10

// Verifier checks a Trackunit-Identity JWT and profiles it, accepted or not.
type Verifier interface {
	Check(ctx context.Context, token string) (*identity.Identity, identity.Profile, error)
	Ready() bool
}

// InstallStore commits install events.
type InstallStore interface {
	ApplyInstallEvent(ctx context.Context, ev store.InstallEvent) (store.Outcome, error)
	Ping(ctx context.Context) error
}

// InstallObserver is told the outcome of every install callback, for metrics.
type InstallObserver interface {
	InstallEvent(eventType, outcome string)
	// Rejected counts an identity refused after verification (its claims
	// disagree with the body).
	Rejected(reason string)
}

// installBody is the callback body. Unknown fields are ignored, as the
// contract asks: Trackunit says the message "will look something like this".
type installBody struct {
	Type         string        `json:"type"`
	IrisAppID    string        `json:"irisAppId"`
	AccountID    string        `json:"accountId"`
	ClientID     crypto.Secret `json:"clientId"`
	ClientSecret crypto.Secret `json:"clientSecret"`
}

type installResponse struct {
	Status string `json:"status"`
}

type installHandler struct {
	verifier    Verifier
	store       InstallStore
	allowedApps []string
	now         func() time.Time
	observer    InstallObserver
	logger      *slog.Logger
	profiles    *ProfileRecorder // optional
}

// handle answers POST /appinstall in the contract's order of checks:
// size, identity, body, allowed app, then the commit.
func (h *installHandler) handle(c echo.Context) error {
	req := c.Request()
	receivedAt := h.now()
	raw, err := readCapped(req.Body, maxInstallBody)
	if err != nil {
		return err
	}
	id, profile, err := h.verifier.Check(req.Context(), req.Header.Get("Trackunit-Identity"))
	if err != nil {
		h.seen(c, profile, nil)
		return identityError(err)
	}
	// Not nil from here on: [] says "read, none unknown", nil "not read".
	unknown := nonNilNames(unknownBodyFields(raw))
	body, err := decodeInstallBody(raw)
	if err != nil {
		h.seen(c, profile, unknown)
		return err
	}
	if err := id.CheckBody(body.IrisAppID, body.AccountID); err != nil {
		// The verifier counted its own refusals; this one happens here.
		if h.observer != nil {
			h.observer.Rejected(identity.ReasonOf(err))
		}
		h.seen(c, profile.Refused(identity.ReasonOf(err)), unknown)
		return identityError(err)
	}
	h.seen(c, profile, unknown)
	if len(h.allowedApps) > 0 && !slices.Contains(h.allowedApps, body.IrisAppID) {
		return newError(http.StatusForbidden, codeAppNotAllowed, "this irisAppId is not served here", nil)
	}
	ev := store.InstallEvent{
		Type:          body.Type,
		IrisAppID:     body.IrisAppID,
		AccountID:     canonicalUUID(body.AccountID),
		ClientID:      body.ClientID,
		ClientSecret:  body.ClientSecret,
		EventAt:       receivedAt,
		ReceivedAt:    receivedAt,
		JTI:           id.JTI,
		RemoteAddr:    remoteHost(req.RemoteAddr),
		UnknownFields: unknown,
	}
	if !id.IssuedAt.IsZero() {
		ev.EventAt = id.IssuedAt
	}
	outcome, err := h.store.ApplyInstallEvent(req.Context(), ev)
	if err != nil {
		// The error table answers: store.ErrInvalid 400, the database 503.
		return fmt.Errorf("storing the install event: %w", err)
	}
	if h.observer != nil {
		h.observer.InstallEvent(eventTypeLabel(body.Type), string(outcome))
	}
	h.logger.LogAttrs(req.Context(), slog.LevelInfo, "install event",
		slog.String("iris_app_id", ev.IrisAppID),
		slog.String("account_id", ev.AccountID),
		slog.String("type", eventTypeLabel(body.Type)),
		slog.String("outcome", string(outcome)),
		slog.String("jti", ev.JTI),
		slog.Any("unknown_fields", unknown),
		slog.String("request_id", c.Response().Header().Get(echo.HeaderXRequestID)))
	return c.JSON(http.StatusOK, installResponse{Status: string(outcome)})
}

// readCapped reads at most limit bytes; one byte more means 413.
func readCapped(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, newError(http.StatusBadRequest, codeInvalidRequest, "the request body could not be read", err)
	}
	if int64(len(b)) > limit {
		return nil, newError(http.StatusRequestEntityTooLarge, codePayloadTooLarge, "the body is larger than 64 KiB", nil)
	}
	return b, nil
}

func identityError(err error) error {
	msg := "the Trackunit-Identity header is missing or not valid"
	var ie *identity.Error
	if errors.As(err, &ie) {
		msg = "the Trackunit-Identity header is not valid: " + ie.Reason
	}
	return newError(http.StatusUnauthorized, codeInvalidIdentity, msg, err)
}

// decodeInstallBody validates the body; its error messages name fields,
// never their values.
func decodeInstallBody(raw []byte) (*installBody, error) {
	var b installBody
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, newError(http.StatusBadRequest, codeInvalidRequest, "the body is not a JSON object of the install callback's shape", nil)
	}
	var missing []string
	for _, f := range []struct{ name, value string }{
		{"type", b.Type}, {"irisAppId", b.IrisAppID}, {"accountId", b.AccountID},
	} {
		if strings.TrimSpace(f.value) == "" {
			missing = append(missing, f.name)
		}
	}
	if b.Type == store.TypeInstalled {
		if b.ClientID.IsZero() {
			missing = append(missing, "clientId")
		}
		if b.ClientSecret.IsZero() {
			missing = append(missing, "clientSecret")
		}
	}
	if len(missing) > 0 {
		return nil, newError(http.StatusBadRequest, codeInvalidRequest, "missing fields: "+strings.Join(missing, ", "), nil)
	}
	if len(b.Type) > 64 {
		return nil, newError(http.StatusBadRequest, codeInvalidRequest, "type is too long", nil)
	}
	if !validIrisAppID(b.IrisAppID) {
		return nil, newError(http.StatusBadRequest, codeInvalidRequest, irisAppIDRule, nil)
	}
	if !isUUID(b.AccountID) {
		return nil, newError(http.StatusBadRequest, codeInvalidRequest, "accountId is not a UUID", nil)
	}
	return &b, nil
}

// maxIrisAppIDLen is npm's bound on a package name, which an irisAppId is.
const maxIrisAppIDLen = 214

const irisAppIDRule = "irisAppId must be @scope/name: printable ASCII without spaces, at most 214 characters"

// validIrisAppID reports whether s has the contract's shape: "@scope/name",
// both parts non-empty, printable ASCII without spaces or control
// characters, at most 214 characters. Anything else can only be a forged
// or broken callback, and would otherwise reach logs, the admin page and
// the CLI's table.
func validIrisAppID(s string) bool {
	if len(s) < 4 || len(s) > maxIrisAppIDLen || s[0] != '@' {
		return false
	}
	slash := strings.IndexByte(s, '/')
	if slash < 2 || slash == len(s)-1 || strings.IndexByte(s[slash+1:], '/') >= 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// checkInstallKey validates an (irisAppId, accountId) pair given to an API.
func checkInstallKey(app, account string) error {
	if !validIrisAppID(app) {
		return invalidArgument(irisAppIDRule)
	}
	if !isUUID(account) {
		return invalidArgument("accountId must be a UUID")
	}
	return nil
}

// isUUID accepts only the canonical 8-4-4-4-12 form, which is what
// Trackunit sends; uuid.Parse alone would also take braces and URNs.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

func canonicalUUID(s string) string {
	if isCanonicalUUID(s) {
		return s // what String would return, without the allocation
	}
	return uuid.MustParse(s).String()
}

// isCanonicalUUID reports whether s is in uuid.UUID.String's form: 36
// characters, lower-case hex, hyphens at 8, 13, 18 and 23.
func isCanonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// eventTypeLabel bounds the metric label to known values: the type is
// attacker-chosen text.
func eventTypeLabel(t string) string {
	switch t {
	case store.TypeInstalled, store.TypeUninstalled:
		return t
	}
	return "other"
}

// remoteHost is the peer's address. X-Forwarded-For is not trusted: it is
// recorded for audit, and a caller could forge it.
func remoteHost(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}
