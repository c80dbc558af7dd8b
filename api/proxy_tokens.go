package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/derrors"
	"github.com/irisx-broker/irisx-broker/store"
	"github.com/irisx-broker/irisx-broker/token"
)

// InvalidatingBroker is today's token broker: Token plus Invalidate.
type InvalidatingBroker interface {
	Broker
	Invalidate(irisAppID, accountID string)
}

// BrokerProxyTokens adapts today's token broker to ProxyTokens. Its Forget
// drops every cached token of the install on this replica only; see
// ProxyTokens.Forget for what the token core should do instead.
func BrokerProxyTokens(b InvalidatingBroker) ProxyTokens { return brokerTokens{b} }

type brokerTokens struct{ b InvalidatingBroker }

func (t brokerTokens) Token(ctx context.Context, app, account string, scopes []string) (crypto.Secret, error) {
	tok, err := t.b.Token(ctx, token.Request{IrisAppID: app, AccountID: account, Scopes: scopes})
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

func (t brokerTokens) Forget(_ context.Context, app, account string, _ []string, _ crypto.Secret) {
	t.b.Invalidate(app, account)
}

// proxyTokenError maps a token failure to the proxy's answer, as GetToken
// maps it: 404 unknown install, 412 uninstalled or rejected, 400 bad
// scopes, 503 unavailable. It is local until the one error table in
// errors.go covers HTTP answers of the proxy too.
func proxyTokenError(err error) *apiError {
	switch {
	case errors.Is(err, token.ErrNotFound), errors.Is(err, store.ErrNotFound), errors.Is(err, derrors.NotFound):
		return newError(http.StatusNotFound, codeNotFound, "no such install", err)
	case errors.Is(err, token.ErrUninstalled):
		return newError(http.StatusPreconditionFailed, "failed_precondition", "the app is uninstalled from this account", err)
	case errors.Is(err, token.ErrCredentialsRejected), errors.Is(err, derrors.Rejected):
		return newError(http.StatusPreconditionFailed, "failed_precondition", "Trackunit rejected this install's credentials; a new INSTALLED callback is needed", err)
	case errors.Is(err, token.ErrInvalidScope), errors.Is(err, derrors.Invalid):
		return newError(http.StatusBadRequest, "invalid_argument", "a requested scope is invalid or not granted", err)
	case errors.Is(err, token.ErrNoScopes):
		return newError(http.StatusBadRequest, "invalid_argument", "no Irisx-Scopes given and DEFAULT_SCOPES is empty", err)
	case errors.Is(err, derrors.Internal):
		return newError(http.StatusInternalServerError, codeInternal, "internal error", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return newError(http.StatusServiceUnavailable, codeUnavailable, "no token was ready in time; retry later", err)
	}
	return newError(http.StatusServiceUnavailable, codeUnavailable, "Trackunit's token endpoint is unavailable; retry later", err)
}
