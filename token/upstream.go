package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/store"
)

// defaultLifetime is assumed when the token response has no expires_in; it
// is the lifetime Trackunit documents for /apptoken.
const defaultLifetime = time.Hour

// mint reads the install's credentials and exchanges them for a token. The
// credentials live only for this call.
func (b *Broker) mint(ctx context.Context, f fetchReq) (Token, error) {
	creds, err := b.st.InstallCredentials(ctx, f.app, f.account)
	if errors.Is(err, store.ErrNotFound) {
		return Token{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err != nil {
		b.log.LogAttrs(ctx, slog.LevelError, "loading install credentials failed",
			slog.String("iris_app_id", f.app), slog.String("account_id", f.account), slog.Any("error", err))
		return Token{}, fmt.Errorf("%w: loading install credentials: %w", ErrUnavailable, err)
	}
	switch creds.Status {
	case store.StatusInstalled:
	case store.StatusUninstalled:
		return Token{}, ErrUninstalled
	case store.StatusCredentialsRejected:
		return Token{}, ErrCredentialsRejected
	default:
		return Token{}, fmt.Errorf("%w: install has unknown status %q", ErrUnavailable, truncate(string(creds.Status), 32))
	}
	if creds.ClientID.IsZero() || creds.ClientSecret.IsZero() {
		return Token{}, fmt.Errorf("%w: install has no stored credentials", ErrUnavailable)
	}

	cc := &clientcredentials.Config{
		ClientID:     creds.ClientID.Reveal(),
		ClientSecret: creds.ClientSecret.Reveal(),
		TokenURL:     b.tokenURL,
		Scopes:       f.scopes,
		AuthStyle:    oauth2.AuthStyleInParams, // in the form body, never a header
	}
	tok, uerr := b.retrieve(context.WithValue(ctx, oauth2.HTTPClient, b.httpClient), cc, f)
	if uerr == nil {
		b.record(f, "")
		return tok, nil
	}
	// Upstream error text may quote what was sent; scrub before it can
	// reach an error or a log line.
	uerr.desc = scrub(uerr.desc, cc.ClientID, cc.ClientSecret)
	uerr.code = scrub(uerr.code, cc.ClientID, cc.ClientSecret)
	attrs := []slog.Attr{slog.String("iris_app_id", f.app), slog.String("account_id", f.account),
		slog.Int("status", uerr.status), slog.String("code", uerr.code), slog.String("description", uerr.desc)}
	switch uerr.kind {
	case kindRejected:
		b.record(f, "invalid_client")
		if err := b.st.MarkCredentialsRejected(ctx, f.app, f.account, creds.Version, "invalid_client"); err != nil {
			b.log.LogAttrs(ctx, slog.LevelError, "marking credentials rejected failed", append(attrs, slog.Any("error", err))...)
		}
		b.log.LogAttrs(ctx, slog.LevelWarn, "install credentials rejected by token endpoint", attrs...)
		return Token{}, fmt.Errorf("%w: %s", ErrCredentialsRejected, uerr.summary())
	case kindInvalidScope:
		b.record(f, "invalid_scope")
		b.log.LogAttrs(ctx, slog.LevelInfo, "token endpoint refused scopes", attrs...)
		return Token{}, fmt.Errorf("%w: %s", ErrInvalidScope, uerr.summary())
	default:
		b.record(f, "unavailable")
		b.log.LogAttrs(ctx, slog.LevelError, "token endpoint unavailable", attrs...)
		return Token{}, fmt.Errorf("%w: %s", ErrUnavailable, uerr.summary())
	}
}

// retrieve calls the token endpoint, retrying transient failures with
// exponential backoff and full jitter, or the server's Retry-After.
func (b *Broker) retrieve(ctx context.Context, cc *clientcredentials.Config, f fetchReq) (Token, *upstreamError) {
	for attempt := 1; ; attempt++ {
		sent := b.now()
		began := time.Now()
		ot, err := cc.Token(ctx)
		var tok Token
		var uerr *upstreamError
		if err == nil {
			tok, uerr = toToken(ot, sent, f.scopes)
		} else {
			uerr = classify(ctx, err, sent)
		}
		b.obs.Upstream(outcomeOf(uerr), time.Since(began))
		if uerr == nil {
			return tok, nil
		}
		uerr.attempts = attempt
		if uerr.kind != kindTransient || attempt >= b.maxAttempts || ctx.Err() != nil {
			return Token{}, uerr
		}
		delay := b.delay(attempt, uerr)
		b.log.LogAttrs(ctx, slog.LevelWarn, "token endpoint attempt failed; retrying",
			slog.String("iris_app_id", f.app), slog.String("account_id", f.account),
			slog.Int("attempt", attempt), slog.String("outcome", uerr.outcome), slog.Int("status", uerr.status),
			slog.Duration("retry_in", delay))
		if err := b.sleep(ctx, delay); err != nil {
			return Token{}, uerr
		}
	}
}

func outcomeOf(uerr *upstreamError) string {
	if uerr == nil {
		return "ok"
	}
	return uerr.outcome
}

// toToken converts a successful response, measuring expiry from when the
// request was sent on the broker's clock.
func toToken(ot *oauth2.Token, sent time.Time, requested []string) (Token, *upstreamError) {
	if ot.AccessToken == "" {
		return Token{}, &upstreamError{kind: kindTransient, outcome: "bad_response", status: 200, desc: "response without access_token"}
	}
	life := expiresIn(ot)
	if life <= 0 {
		life = defaultLifetime
	}
	scopes := requested
	if s, ok := ot.Extra("scope").(string); ok && strings.TrimSpace(s) != "" {
		scopes = strings.Fields(s)
	}
	typ := ot.TokenType
	if typ == "" {
		typ = "Bearer"
	}
	return Token{AccessToken: crypto.Secret(ot.AccessToken), TokenType: typ, ExpiresAt: sent.Add(life), Scopes: scopes}, nil
}

// expiresIn reads expires_in from the raw response: clientcredentials
// only converts it to an Expiry on the wall clock, and the broker measures
// expiry on its own clock. JSON gives a number, a form body a string.
func expiresIn(ot *oauth2.Token) time.Duration {
	var secs float64
	switch v := ot.Extra("expires_in").(type) {
	case float64:
		secs = v
	case string:
		secs, _ = strconv.ParseFloat(v, 64)
	default:
		if ot.ExpiresIn > 0 {
			secs = float64(ot.ExpiresIn)
		} else if !ot.Expiry.IsZero() {
			secs = time.Until(ot.Expiry).Seconds()
		}
	}
	if secs <= 0 || secs > 1e9 {
		return 0
	}
	return time.Duration(secs * float64(time.Second)).Round(time.Second)
}

// scrub removes the credentials from upstream text and bounds its length.
func scrub(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[REDACTED]")
			s = strings.ReplaceAll(s, url.QueryEscape(sec), "[REDACTED]")
		}
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return truncate(s, 200)
}
