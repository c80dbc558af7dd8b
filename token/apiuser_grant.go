package token

import (
	"context"
	"fmt"
	"log/slog"

	"golang.org/x/oauth2"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/store"
)

// apiUserLease is a replica's lease on one API user's row: the grant that
// mints (the stored refresh token, else or when Trackunit refuses it the
// password grant), how its failures are classified and recorded, and the
// commit that stores the rotated refresh token with the access token.
type apiUserLease struct {
	s  apiUserLeases
	f  fetchReq
	st store.APIUserState // the row as leased: the refresh token to spend
	// upd is what the grant obtained or found, committed under the lease.
	upd store.APIUserUpdate
}

// rotates: the refresh token is single-use, so a token is handed out only
// once the next refresh token is durable.
func (*apiUserLease) rotates() bool { return true }

func (l *apiUserLease) commit(ctx context.Context, tok Token) (Token, bool, error) {
	v, ok, err := l.s.st.CommitAPIUserLease(ctx, l.st, l.s.b.owner, l.upd)
	if err != nil || !ok {
		return Token{}, ok, err
	}
	return userToken(v), true, nil
}

// release records the failed grant's outcome (a rejection, a refused
// refresh token, an error code) under the lease, which it gives up.
func (l *apiUserLease) release(ctx context.Context) error {
	if l.upd == (store.APIUserUpdate{}) {
		return l.s.st.ReleaseAPIUserLease(ctx, l.st.Name, l.s.b.owner)
	}
	_, _, err := l.s.st.CommitAPIUserLease(ctx, l.st, l.s.b.owner, l.upd)
	return err
}

// grant obtains new tokens for the leased user and sets l.upd to the
// outcome to commit.
func (l *apiUserLease) grant(ctx context.Context) (Token, error) {
	b, st := l.s.b, l.st
	cfg := &oauth2.Config{
		ClientID:     st.ClientID.Reveal(),
		ClientSecret: st.ClientSecret.Reveal(),
		Endpoint:     oauth2.Endpoint{TokenURL: b.tokenURL, AuthStyle: oauth2.AuthStyleInHeader},
		Scopes:       st.RequestScopes,
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, b.httpClient)
	secrets := []string{cfg.ClientID, cfg.ClientSecret, st.Password.Reveal(), st.RefreshToken.Reveal()}
	attrs := func(grant string, uerr *upstreamError) []slog.Attr {
		uerr.scrub(secrets...)
		return []slog.Attr{slog.String("api_user", st.Name), slog.String("grant", grant),
			slog.Int("status", uerr.status), slog.String("code", uerr.code), slog.String("description", uerr.desc)}
	}

	dropRefresh := false
	if !st.RefreshToken.IsZero() {
		tok, ot, uerr := b.exchange(ctx, l.f, grantRefreshToken, st.RequestScopes, true, func() (*oauth2.Token, error) {
			return cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: st.RefreshToken.Reveal()}).Token()
		})
		if uerr == nil {
			return l.granted(tok, ot), nil
		}
		a := attrs(grantRefreshToken, uerr)
		switch {
		case uerr.lost:
			b.log.LogAttrs(ctx, slog.LevelWarn, "refresh answer lost twice; using the password grant", a...)
		case uerr.kind == kindTransient || ctx.Err() != nil:
			b.log.LogAttrs(ctx, slog.LevelError, "token endpoint unavailable", a...)
			l.upd = store.APIUserUpdate{LastError: uerr.outcome}
			return Token{}, fmt.Errorf("%w: %s", ErrUnavailable, uerr.summary())
		default:
			// Expired, revoked, or spent (reuse detection revoked its
			// chain): only the password grant can start a new chain.
			dropRefresh = true
			b.log.LogAttrs(ctx, slog.LevelInfo, "refresh token refused; using the password grant", a...)
		}
	}

	tok, ot, uerr := b.exchange(ctx, l.f, grantPassword, st.RequestScopes, false, func() (*oauth2.Token, error) {
		return cfg.PasswordCredentialsToken(ctx, st.Username, st.Password.Reveal())
	})
	if uerr == nil {
		return l.granted(tok, ot), nil
	}
	a := attrs(grantPassword, uerr)
	switch {
	case uerr.kind == kindRejected || uerr.code == "invalid_grant":
		code := uerr.code
		if code == "" {
			code = "invalid_client"
		}
		b.log.LogAttrs(ctx, slog.LevelWarn, "API user credentials rejected by token endpoint", a...)
		l.upd = store.APIUserUpdate{Reject: true, LastError: code}
		return Token{}, fmt.Errorf("%w: %s", ErrAPIUserRejected, uerr.summary())
	case uerr.kind == kindInvalidScope:
		b.log.LogAttrs(ctx, slog.LevelInfo, "token endpoint refused the API user's scopes", a...)
		l.upd = store.APIUserUpdate{LastError: "invalid_scope", DropRefreshToken: dropRefresh}
		return Token{}, fmt.Errorf("%w: %s", ErrInvalidScope, uerr.summary())
	default:
		b.log.LogAttrs(ctx, slog.LevelError, "token endpoint unavailable", a...)
		l.upd = store.APIUserUpdate{LastError: uerr.outcome, DropRefreshToken: dropRefresh}
		return Token{}, fmt.Errorf("%w: %s", ErrUnavailable, uerr.summary())
	}
}

// granted notes the tokens to commit. x/oauth2 keeps the presented refresh
// token when a refresh answer carries none, so a server that does not
// rotate keeps working.
func (l *apiUserLease) granted(tok Token, ot *oauth2.Token) Token {
	l.upd = store.APIUserUpdate{Tokens: &store.APIUserTokens{
		AccessToken: tok.AccessToken, RefreshToken: crypto.Secret(ot.RefreshToken),
		TokenType: tok.TokenType, Scopes: tok.Scopes, ExpiresAt: tok.ExpiresAt,
	}}
	return tok
}
