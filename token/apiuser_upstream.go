package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/oauth2"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/store"
)

// endpointToken is the metrics label of POST {auth}/token.
const endpointToken = "token"

// refresh obtains new tokens under the user's fleet-wide lease, unless the
// stored token has more than accept left and is outside its refresh margin
// (another replica refreshed while this one waited): then that token is
// used. Taking the lease and committing are each one short statement; no
// database connection is held while Trackunit answers, and a replica that
// finds the lease taken polls the row. The new refresh and access tokens are
// committed, only if the lease is still ours and the stored refresh token is
// still the one spent, before refresh returns: no caller is handed a token
// whose refresh token could still be lost.
func (b *APIUsers) refresh(ctx context.Context, name string, accept time.Duration) (fetchResult, error) {
	for {
		now := b.now()
		st, leased, err := b.st.LeaseAPIUser(ctx, name, b.owner, now, now.Add(b.leaseFor))
		if err != nil {
			return fetchResult{}, b.storeError(ctx, name, err)
		}
		usable := left(st.APIUserToken, now) > max(accept, b.marginFor(st.APIUserToken))
		switch {
		case st.Status == store.APIUserCredentialsRejected:
			if leased {
				b.release(ctx, name)
			}
			return fetchResult{view: st.APIUserToken}, ErrAPIUserRejected
		case usable || (!leased && left(st.APIUserToken, now) > accept):
			if leased {
				b.release(ctx, name)
			}
			return fetchResult{view: st.APIUserToken}, nil
		case leased:
			return b.refreshLeased(ctx, st)
		}
		if err := sleepCtx(ctx, leasePoll+time.Duration(b.rand()*float64(leasePoll))); err != nil {
			return fetchResult{}, fmt.Errorf("%w: waiting for another replica's refresh: %w", ErrUnavailable, err)
		}
	}
}

// refreshLeased calls Trackunit under the lease and commits the outcome.
func (b *APIUsers) refreshLeased(ctx context.Context, st store.APIUserState) (fetchResult, error) {
	name := st.Name
	upd, failure := b.obtain(ctx, st)
	if upd.Tokens != nil && b.afterUpstream != nil {
		if herr := b.afterUpstream(); herr != nil {
			// As a crash here would: nothing committed, the lease left to
			// run out.
			return fetchResult{}, fmt.Errorf("%w: %w", ErrUnavailable, herr)
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	view, ok, err := b.st.CommitAPIUserLease(cctx, st, b.owner, upd)
	if err != nil || !ok {
		msg := "updating API user tokens failed"
		if upd.Tokens != nil {
			// The refresh token Trackunit just rotated is lost; the stored
			// one is retried next (within the server's grace window) and
			// the password grant follows if it is refused.
			msg = "committing new API user tokens failed; they are discarded"
		}
		if err == nil {
			err = errors.New("the lease expired or the refresh token changed meanwhile")
		}
		b.log.LogAttrs(ctx, slog.LevelError, msg, slog.String("api_user", name), slog.Any("error", err))
		return fetchResult{}, fmt.Errorf("%w: %s: %w", ErrUnavailable, msg, err)
	}
	return fetchResult{view: view, minted: upd.Tokens != nil}, failure
}

func (b *APIUsers) release(ctx context.Context, name string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := b.st.ReleaseAPIUserLease(rctx, name, b.owner); err != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "releasing the API user lease failed", slog.String("api_user", name), slog.Any("error", err))
	}
}

// obtain gets new tokens for a locked user: with the stored refresh token
// when there is one, else or when Trackunit refuses it with the password
// grant. The update records the outcome: the tokens, a rejection, or an
// error code.
func (b *APIUsers) obtain(ctx context.Context, st store.APIUserState) (store.APIUserUpdate, error) {
	cfg := &oauth2.Config{
		ClientID:     st.ClientID.Reveal(),
		ClientSecret: st.ClientSecret.Reveal(),
		Endpoint:     oauth2.Endpoint{TokenURL: b.tokenURL, AuthStyle: oauth2.AuthStyleInHeader},
		Scopes:       st.RequestScopes,
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, b.httpClient)
	secrets := []string{cfg.ClientID, cfg.ClientSecret, st.Password.Reveal(), st.RefreshToken.Reveal()}
	attrs := func(grant string, uerr *upstreamError) []slog.Attr {
		uerr.desc, uerr.code = scrub(uerr.desc, secrets...), scrub(uerr.code, secrets...)
		return []slog.Attr{slog.String("api_user", st.Name), slog.String("grant", grant),
			slog.Int("status", uerr.status), slog.String("code", uerr.code), slog.String("description", uerr.desc)}
	}

	dropRefresh := false
	if !st.RefreshToken.IsZero() {
		tok, uerr, lost := b.refreshGrant(ctx, cfg, st)
		if uerr == nil {
			return store.APIUserUpdate{Tokens: &tok}, nil
		}
		a := attrs(oauth2GrantRefresh, uerr)
		switch {
		case lost:
			b.log.LogAttrs(ctx, slog.LevelWarn, "refresh answer lost twice; using the password grant", a...)
		case uerr.kind == kindTransient || ctx.Err() != nil:
			b.log.LogAttrs(ctx, slog.LevelError, "token endpoint unavailable", a...)
			return store.APIUserUpdate{LastError: uerr.outcome}, fmt.Errorf("%w: %s", ErrUnavailable, uerr.summary())
		default:
			// Expired, revoked, or spent (reuse detection revoked its
			// chain): only the password grant can start a new chain.
			dropRefresh = true
			b.log.LogAttrs(ctx, slog.LevelInfo, "refresh token refused; using the password grant", a...)
		}
	}

	tok, uerr := b.passwordGrant(ctx, cfg, st)
	if uerr == nil {
		return store.APIUserUpdate{Tokens: &tok}, nil
	}
	a := attrs(oauth2GrantPassword, uerr)
	switch {
	case uerr.kind == kindRejected || uerr.code == "invalid_grant":
		code := uerr.code
		if code == "" {
			code = "invalid_client"
		}
		b.log.LogAttrs(ctx, slog.LevelWarn, "API user credentials rejected by token endpoint", a...)
		return store.APIUserUpdate{Reject: true, LastError: code}, fmt.Errorf("%w: %s", ErrAPIUserRejected, uerr.summary())
	case uerr.kind == kindInvalidScope:
		b.log.LogAttrs(ctx, slog.LevelInfo, "token endpoint refused the API user's scopes", a...)
		return store.APIUserUpdate{LastError: "invalid_scope", DropRefreshToken: dropRefresh},
			fmt.Errorf("%w: %s", ErrInvalidScope, uerr.summary())
	default:
		b.log.LogAttrs(ctx, slog.LevelError, "token endpoint unavailable", a...)
		return store.APIUserUpdate{LastError: uerr.outcome, DropRefreshToken: dropRefresh},
			fmt.Errorf("%w: %s", ErrUnavailable, uerr.summary())
	}
}

// Grant names, for logs.
const (
	oauth2GrantRefresh  = "refresh_token"
	oauth2GrantPassword = "password"
)

// refreshGrant redeems the stored refresh token. When the answer may have
// been lost after Trackunit processed the request (the connection broke, a
// time-out, a 200 that is not a token), it retries once at once with the
// same token, which servers accept within a short grace window; lost
// reports that the second answer was lost too. 429 and 5xx are retried
// with backoff as for installs.
func (b *APIUsers) refreshGrant(ctx context.Context, cfg *oauth2.Config, st store.APIUserState) (store.APIUserTokens, *upstreamError, bool) {
	retriedLost := false
	for attempt := 1; ; attempt++ {
		tok, uerr := b.attempt(ctx, st.RequestScopes, func() (*oauth2.Token, error) {
			return cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: st.RefreshToken.Reveal()}).Token()
		})
		if uerr == nil {
			return tok, nil, false
		}
		uerr.attempts = attempt
		if ctx.Err() != nil {
			return store.APIUserTokens{}, uerr, false
		}
		if answerMayBeLost(uerr) {
			if retriedLost {
				return store.APIUserTokens{}, uerr, true
			}
			retriedLost = true
			b.log.LogAttrs(ctx, slog.LevelWarn, "refresh answer lost; retrying at once with the same refresh token",
				slog.String("api_user", st.Name), slog.String("outcome", uerr.outcome))
			continue
		}
		if uerr.kind != kindTransient || attempt >= b.maxAttempts {
			return store.APIUserTokens{}, uerr, false
		}
		if err := b.sleep(ctx, b.delay(attempt, uerr)); err != nil {
			return store.APIUserTokens{}, uerr, false
		}
	}
}

// passwordGrant asks for new tokens with the user's password, retrying
// transient failures with backoff.
func (b *APIUsers) passwordGrant(ctx context.Context, cfg *oauth2.Config, st store.APIUserState) (store.APIUserTokens, *upstreamError) {
	for attempt := 1; ; attempt++ {
		tok, uerr := b.attempt(ctx, st.RequestScopes, func() (*oauth2.Token, error) {
			return cfg.PasswordCredentialsToken(ctx, st.Username, st.Password.Reveal())
		})
		if uerr == nil {
			return tok, nil
		}
		uerr.attempts = attempt
		if uerr.kind != kindTransient || attempt >= b.maxAttempts || ctx.Err() != nil {
			return store.APIUserTokens{}, uerr
		}
		b.log.LogAttrs(ctx, slog.LevelWarn, "token endpoint attempt failed; retrying",
			slog.String("api_user", st.Name), slog.Int("attempt", attempt), slog.String("outcome", uerr.outcome),
			slog.Int("status", uerr.status))
		if err := b.sleep(ctx, b.delay(attempt, uerr)); err != nil {
			return store.APIUserTokens{}, uerr
		}
	}
}

// attempt makes one upstream call and converts its answer, measuring expiry
// from when the request was sent, on the broker's clock.
func (b *APIUsers) attempt(ctx context.Context, requested []string, call func() (*oauth2.Token, error)) (store.APIUserTokens, *upstreamError) {
	sent := b.now()
	began := time.Now()
	ot, err := call()
	var (
		tok  store.APIUserTokens
		uerr *upstreamError
	)
	if err == nil {
		tok, uerr = userTokens(ot, sent, requested)
	} else {
		uerr = classify(ctx, err, sent)
	}
	b.obs.UpstreamCall(endpointToken, outcomeOf(uerr), time.Since(began))
	return tok, uerr
}

// userTokens converts a successful token response. x/oauth2 keeps the
// presented refresh token when a refresh answer carries none, so a server
// that does not rotate keeps working.
func userTokens(ot *oauth2.Token, sent time.Time, requested []string) (store.APIUserTokens, *upstreamError) {
	t, uerr := toToken(ot, sent, requested)
	if uerr != nil {
		return store.APIUserTokens{}, uerr
	}
	return store.APIUserTokens{
		AccessToken: t.AccessToken, RefreshToken: crypto.Secret(ot.RefreshToken),
		TokenType: t.TokenType, Scopes: t.Scopes, ExpiresAt: t.ExpiresAt,
	}, nil
}

// answerMayBeLost reports a failure after which Trackunit may have spent
// the refresh token without the broker seeing the new one.
func answerMayBeLost(e *upstreamError) bool {
	return e.outcome == "network_error" || e.outcome == "timeout" || (e.outcome == "bad_response" && e.status == 200)
}
