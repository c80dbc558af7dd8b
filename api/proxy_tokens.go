package api

import (
	"context"
	"errors"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/token"
)

// ForgettingBroker is the install token broker as the proxy uses it:
// Token, and Forget for a token Trackunit refused (fleet-wide
// compare-and-delete; see token.Broker.Forget).
type ForgettingBroker interface {
	Broker
	Forget(ctx context.Context, irisAppID, accountID string, scopes []string, rejected crypto.Secret) error
}

// BrokerProxyTokens adapts the install token broker to ProxyTokens.
func BrokerProxyTokens(b ForgettingBroker) ProxyTokens { return brokerTokens{b} }

type brokerTokens struct{ b ForgettingBroker }

func (t brokerTokens) Token(ctx context.Context, app, account string, scopes []string) (crypto.Secret, error) {
	tok, err := t.b.Token(ctx, token.Request{IrisAppID: app, AccountID: account, Scopes: scopes})
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

// Forget is best effort: when the shared copy cannot be erased, the retry
// may get the refused token again and its 401 is passed on.
func (t brokerTokens) Forget(ctx context.Context, app, account string, scopes []string, rejected crypto.Secret) {
	_ = t.b.Forget(ctx, app, account, scopes, rejected)
}

// proxyTokenError maps a token failure to the proxy's answer through the
// one error table, as GetToken's: 404 unknown install, 412 uninstalled or
// rejected, 400 bad scopes, 503 unavailable. A token not ready before the
// caller's deadline is 503 here: the proxy has no RPC deadline to report.
func proxyTokenError(err error) answer {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return answerUnavailable.with("no token was ready in time; retry later")
	}
	return classify(err)
}
