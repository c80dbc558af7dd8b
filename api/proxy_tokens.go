package api

import (
	"context"
	"errors"

	"github.com/irisx-broker/irisx-broker/crypto"
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
