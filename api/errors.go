package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"
	"github.com/labstack/echo/v4"

	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
)

// Error codes of the public listener's JSON error body.
const (
	codePayloadTooLarge = "payload_too_large"
	codeInvalidIdentity = "invalid_identity"
	codeInvalidRequest  = "invalid_request"
	codeAppNotAllowed   = "app_not_allowed"
	codeUnavailable     = "unavailable"
	codeNotFound        = "not_found"
	codeInternal        = "internal"
)

// apiError is an error a handler returns to answer with a given status and
// a message that is safe to show the caller. cause, if any, is logged but
// never sent.
type apiError struct {
	status  int
	code    string
	message string
	cause   error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return e.code + ": " + e.message + ": " + e.cause.Error()
	}
	return e.code + ": " + e.message
}

func (e *apiError) Unwrap() error { return e.cause }

func newError(status int, code, message string, cause error) *apiError {
	return &apiError{status: status, code: code, message: message, cause: cause}
}

// errorBody is the contract's JSON error shape.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// errorHandler is the one place an error becomes an HTTP answer. Unknown
// errors become a 500 whose text the client never sees; 5xx are logged at
// error level, 4xx at info.
func errorHandler(logger *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		ae := toAPIError(err)
		level := slog.LevelInfo
		if ae.status >= 500 {
			level = slog.LevelError
		}
		logger.Log(c.Request().Context(), level, "request failed",
			"status", ae.status, "error_code", ae.code, "error", ae.Error(),
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(ae.status)
			return
		}
		_ = c.JSON(ae.status, errorBody{Error: ae.code, Message: ae.message})
	}
}

func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		// Only the listed routes exist: a wrong method on one of them is
		// as unknown to the caller as a wrong path.
		case http.StatusNotFound, http.StatusMethodNotAllowed:
			return newError(http.StatusNotFound, codeNotFound, "no such route", nil)
		case http.StatusRequestEntityTooLarge:
			return newError(he.Code, codePayloadTooLarge, "request body too large", nil)
		case http.StatusUnauthorized:
			return newError(he.Code, "unauthenticated", "missing or wrong credentials", nil)
		}
		if he.Code < 500 {
			return newError(he.Code, codeInvalidRequest, http.StatusText(he.Code), err)
		}
	}
	return newError(http.StatusInternalServerError, codeInternal, "internal error", err)
}

var errNotImplemented = errors.New("not implemented")

func invalidArgument(msg string) error {
	return connect.NewError(connect.CodeInvalidArgument, errors.New(msg))
}

// connectError maps a domain error to a Connect error whose message is safe
// to send: the sentinel's meaning, never upstream or database text.
func connectError(err error) *connect.Error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	code, msg := connect.CodeUnavailable, "a dependency is unavailable; retry later"
	switch {
	case errors.Is(err, context.Canceled):
		code, msg = connect.CodeCanceled, "the call was canceled"
	case errors.Is(err, context.DeadlineExceeded):
		code, msg = connect.CodeDeadlineExceeded, "the deadline passed before a token was ready"
	case errors.Is(err, token.ErrAPIUserNotFound), errors.Is(err, store.ErrAPIUserNotFound):
		code, msg = connect.CodeNotFound, "no such API user"
	case errors.Is(err, token.ErrAPIKeyNotFound), errors.Is(err, store.ErrAPIKeyNotFound):
		code, msg = connect.CodeNotFound, "no such API key"
	case errors.Is(err, token.ErrAPIKeyRejected):
		code, msg = connect.CodeFailedPrecondition, "Trackunit rejected this API key's credentials; register them again with CreateApiKey"
	case errors.Is(err, token.ErrAPIUserRejected):
		code, msg = connect.CodeFailedPrecondition, "Trackunit rejected this API user's credentials; register them again with CreateApiUser"
	case errors.Is(err, token.ErrNotFound), errors.Is(err, store.ErrNotFound):
		code, msg = connect.CodeNotFound, "no such install"
	case errors.Is(err, token.ErrUninstalled):
		code, msg = connect.CodeFailedPrecondition, "the app is uninstalled from this account"
	case errors.Is(err, token.ErrCredentialsRejected):
		code, msg = connect.CodeFailedPrecondition, "Trackunit rejected this install's credentials; a new INSTALLED callback is needed"
	case errors.Is(err, token.ErrInvalidScope):
		code, msg = connect.CodeInvalidArgument, "a requested scope is invalid or not granted"
	case errors.Is(err, token.ErrNoScopes):
		code, msg = connect.CodeInvalidArgument, "no scopes requested and DEFAULT_SCOPES is empty"
	case errors.Is(err, token.ErrUnavailable):
		code, msg = connect.CodeUnavailable, "Trackunit's token endpoint is unavailable; retry later"
	}
	return connect.NewError(code, errors.New(msg))
}

// serverSideCodes are the Connect codes that mean our fault or a
// dependency's, logged at error level like a 5xx.
var serverSideCodes = map[connect.Code]bool{
	connect.CodeUnavailable: true, connect.CodeInternal: true, connect.CodeUnknown: true,
	connect.CodeDataLoss: true, connect.CodeUnimplemented: true,
}

// errorInterceptor is where every Connect handler's error is logged (with
// its cause) and mapped; handlers return domain errors as they are.
func errorInterceptor(logger *slog.Logger) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			resp, err := next(ctx, req)
			if err == nil {
				return resp, nil
			}
			ce := connectError(err)
			level := slog.LevelInfo
			if serverSideCodes[ce.Code()] {
				level = slog.LevelError
			}
			logger.Log(ctx, level, "rpc failed", "procedure", req.Spec().Procedure,
				"code", ce.Code().String(), "error", err.Error())
			return nil, ce
		}
	}
}
