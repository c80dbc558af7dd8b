package client

import (
	"context"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// expiryMargin is how long before its expiry a token stops being reused.
// It leaves a request that starts just before expiry time to reach the IRIS
// API with a token that is still valid there.
const expiryMargin = time.Minute

// TokenSource returns an oauth2.TokenSource for accountID's install of the
// app, so oauth2.NewClient(ctx, src) calls the IRIS API with the install's
// tokens. It reuses a token until expiryMargin (one minute) before it
// expires, then asks the broker for one that has at least that long left.
// Errors are not cached: the next call asks again.
//
// ctx is used for every call the source makes, so it should outlive the
// source (as with oauth2.Config.TokenSource), not be a request's context.
func (c *Client) TokenSource(ctx context.Context, accountID string, scopes ...string) oauth2.TokenSource {
	return &reuseSource{
		now: c.now,
		fetch: func() (*oauth2.Token, error) {
			return c.appToken(ctx, accountID, scopes, expiryMargin)
		},
	}
}

// reuseSource is oauth2.ReuseTokenSourceWithExpiry with an injectable clock,
// so tests can move time instead of waiting for it.
type reuseSource struct {
	now   func() time.Time
	fetch func() (*oauth2.Token, error)

	// mu is held across a fetch, so concurrent callers that find the token
	// stale share one call to the broker.
	mu  sync.Mutex
	tok *oauth2.Token
}

// Token implements oauth2.TokenSource.
func (s *reuseSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && s.now().Add(expiryMargin).Before(s.tok.Expiry) {
		return s.tok, nil
	}
	tok, err := s.fetch()
	if err != nil {
		return nil, err
	}
	s.tok = tok
	return tok, nil
}
