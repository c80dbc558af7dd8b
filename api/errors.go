package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"
	"github.com/labstack/echo/v4"

	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/internal/derrors"
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
	codeRejected        = "failed_precondition"
	codeInternal        = "internal"
	codeCanceled        = "canceled"
	codeDeadline        = "deadline_exceeded"
)

// answer is how one kind of error is answered on every surface: the HTTP
// status and JSON code of the Echo handlers (the callback included), the
// Connect code of the RPCs, and a message that is safe to show anyone.
type answer struct {
	status  int
	code    string
	connect connect.Code
	message string
}

func (a answer) serverSide() bool { return a.status >= 500 }

// The classes' answers, also used by the specific rows below.
var (
	answerNotFound    = answer{http.StatusNotFound, codeNotFound, connect.CodeNotFound, "not found"}
	answerInvalid     = answer{http.StatusBadRequest, codeInvalidRequest, connect.CodeInvalidArgument, "a request field is not acceptable"}
	answerRejected    = answer{http.StatusPreconditionFailed, codeRejected, connect.CodeFailedPrecondition, "the request cannot be served in the current state"}
	answerUnavailable = answer{http.StatusServiceUnavailable, codeUnavailable, connect.CodeUnavailable, "a dependency is unavailable; retry later"}
	answerInternal    = answer{http.StatusInternalServerError, codeInternal, connect.CodeInternal, "internal error"}
)

func (a answer) with(message string) answer { a.message = message; return a }

// errorRow matches an error and says how it is answered.
type errorRow struct {
	match  func(error) bool
	answer answer
}

func is(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }

// errorTable is the one mapping from domain errors to answers. The first
// matching row wins, so specific sentinels come before the classes they
// wrap, and an error that wraps two (token.ErrUnavailable around a
// database failure) is answered by what really failed. Every surface reads
// it: the Echo error handler, the Connect interceptor, the admin page and
// the install callback.
var errorTable = []errorRow{
	{is(context.Canceled), answer{499, codeCanceled, connect.CodeCanceled, "the call was canceled"}},
	{is(context.DeadlineExceeded), answer{http.StatusGatewayTimeout, codeDeadline, connect.CodeDeadlineExceeded, "the deadline passed before the call finished"}},

	// Corrupt or foreign ciphertext is our fault, not a passing outage:
	// retrying cannot help, an operator must look.
	{is(store.ErrUndecryptable), answerInternal.with("a stored credential cannot be decrypted with the configured ENCRYPTION_KEYS")},

	{is(token.ErrAPIUserNotFound), answerNotFound.with("no such API user")},
	{is(store.ErrAPIUserNotFound), answerNotFound.with("no such API user")},
	{is(token.ErrAPIKeyNotFound), answerNotFound.with("no such API key")},
	{is(store.ErrAPIKeyNotFound), answerNotFound.with("no such API key")},
	{is(token.ErrAPIKeyRejected), answerRejected.with("Trackunit rejected this API key's credentials; register them again with CreateApiKey")},
	{is(token.ErrAPIUserRejected), answerRejected.with("Trackunit rejected this API user's credentials; register them again with CreateApiUser")},
	{is(token.ErrNotFound), answerNotFound.with("no such install")},
	{is(store.ErrNotFound), answerNotFound.with("no such install")},
	{is(token.ErrUninstalled), answerRejected.with("the app is uninstalled from this account")},
	{is(token.ErrCredentialsRejected), answerRejected.with("Trackunit rejected this install's credentials; a new INSTALLED callback is needed")},
	{is(token.ErrInvalidScope), answerInvalid.with("a requested scope is invalid or not granted")},
	{is(token.ErrNoScopes), answerInvalid.with("no scopes requested and DEFAULT_SCOPES is empty")},
	{is(identity.ErrInvalid), answer{http.StatusUnauthorized, codeInvalidIdentity, connect.CodeUnauthenticated, "the Trackunit-Identity header is missing or not valid"}},
	{is(store.ErrBadPageToken), answerInvalid.with("pageToken is not one this service issued for these filters")},
	{is(store.ErrInvalid), answerInvalid},

	// Before token.ErrUnavailable, which wraps a failed credentials read:
	// the caller is told the database failed, not Trackunit.
	{store.IsDatabaseFailure, answerUnavailable.with("the database is unavailable; retry later")},
	{is(store.ErrDatabase), answerUnavailable.with("the database is unavailable; retry later")},
	{is(token.ErrUnavailable), answerUnavailable.with("Trackunit's token endpoint is unavailable; retry later")},

	{is(derrors.ErrNotFound), answerNotFound},
	{is(derrors.ErrInvalid), answerInvalid},
	{is(derrors.ErrRejected), answerRejected},
	{is(derrors.ErrUnavailable), answerUnavailable},
	{is(derrors.ErrInternal), answerInternal},
}

// publicError is an error raised by our own validation (or an explicit
// answer of a handler): its message is safe to show as it is. cause, if
// any, is logged but never sent.
type publicError struct {
	answer answer
	cause  error
}

func (e *publicError) Error() string {
	if e.cause != nil {
		return e.answer.code + ": " + e.answer.message + ": " + e.cause.Error()
	}
	return e.answer.code + ": " + e.answer.message
}

func (e *publicError) Unwrap() error { return e.cause }

// newError is an explicit answer with the given status, public code and
// message, for the public listener's own checks.
func newError(status int, code, message string, cause error) *publicError {
	var a answer
	switch {
	case status == http.StatusUnauthorized:
		a = answer{status, code, connect.CodeUnauthenticated, message}
	case status == http.StatusForbidden:
		a = answer{status, code, connect.CodePermissionDenied, message}
	case status == http.StatusNotFound:
		a = answer{status, code, connect.CodeNotFound, message}
	case status == http.StatusRequestEntityTooLarge:
		a = answer{status, code, connect.CodeResourceExhausted, message}
	case status < 500:
		a = answer{status, code, connect.CodeInvalidArgument, message}
	case status == http.StatusServiceUnavailable:
		a = answer{status, code, connect.CodeUnavailable, message}
	default:
		a = answer{status, code, connect.CodeInternal, message}
	}
	return &publicError{answer: a, cause: cause}
}

// invalidArgument is a validation failure whose message names the field.
func invalidArgument(msg string) error {
	return &publicError{answer: answerInvalid.with(msg), cause: derrors.ErrInvalid}
}

// classify is the table lookup: how err is answered. An error no row
// matches is internal, its text never shown.
func classify(err error) answer {
	var pe *publicError
	if errors.As(err, &pe) {
		return pe.answer
	}
	for _, row := range errorTable {
		if row.match(err) {
			return row.answer
		}
	}
	return answerInternal
}

// logLevel is the STYLE's rule: our fault or a dependency's at error,
// the caller's at info.
func (a answer) logLevel() slog.Level {
	if a.serverSide() {
		return slog.LevelError
	}
	return slog.LevelInfo
}

// errorBody is the contract's JSON error shape.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// errorHandler is where an Echo handler's error becomes an HTTP answer.
func errorHandler(logger *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		a := httpAnswer(err)
		logger.Log(c.Request().Context(), a.logLevel(), "request failed",
			"status", a.status, "error_code", a.code, "error", err.Error(),
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(a.status)
			return
		}
		_ = c.JSON(a.status, errorBody{Error: a.code, Message: a.message})
	}
}

// httpAnswer is classify plus Echo's own errors (no route, body limit).
func httpAnswer(err error) answer {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		// Only the listed routes exist: a wrong method on one of them is
		// as unknown to the caller as a wrong path.
		case http.StatusNotFound, http.StatusMethodNotAllowed:
			return answerNotFound.with("no such route")
		case http.StatusRequestEntityTooLarge:
			return answer{he.Code, codePayloadTooLarge, connect.CodeResourceExhausted, "request body too large"}
		case http.StatusUnauthorized:
			return answer{he.Code, "unauthenticated", connect.CodeUnauthenticated, "missing or wrong credentials"}
		}
		if he.Code < 500 {
			return answer{he.Code, codeInvalidRequest, connect.CodeInvalidArgument, http.StatusText(he.Code)}
		}
		return answerInternal
	}
	return classify(err)
}

var errNotImplemented = errors.New("not implemented")

// connectError maps a handler's error to a Connect error whose message is
// safe to send: the table's, never upstream or database text.
func connectError(err error) *connect.Error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	a := classify(err)
	return connect.NewError(a.connect, errors.New(a.message))
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
			return nil, rpcFailed(ctx, logger, req.Spec().Procedure, err)
		}
	}
}

// rpcFailed logs a failed call's error with its cause and maps it to the
// Connect error the caller gets.
func rpcFailed(ctx context.Context, logger *slog.Logger, procedure string, err error) *connect.Error {
	ce := connectError(err)
	level := slog.LevelInfo
	if serverSideCodes[ce.Code()] {
		level = slog.LevelError
	}
	logger.Log(ctx, level, "rpc failed", "procedure", procedure,
		"code", ce.Code().String(), "error", err.Error())
	return ce
}
