package token

import (
	"context"
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

// minted is a token with what its cache entry needs besides.
type minted struct {
	tok     Token
	version int64         // of the credentials it was minted with
	life    time.Duration // its whole lifetime when known (a stored token), else 0
}

// mint reads the credentials and obtains a token for them: the one shared
// in the database when it is valid for f.need, else from Trackunit under the
// fleet-wide lease (shared.go). The credentials live only for this call.
func (b *Broker) mint(ctx context.Context, f fetchReq) (minted, error) {
	creds, err := b.kind.load(ctx, f)
	if err != nil {
		return minted{}, err
	}
	tok, life, err := b.mintShared(ctx, f, creds)
	return minted{tok: tok, version: creds.Version, life: life}, err
}

// requireClientSecrets refuses credentials a client-credentials grant
// cannot use.
func requireClientSecrets(creds store.Credentials) error {
	if creds.ClientID.IsZero() || creds.ClientSecret.IsZero() {
		return fmt.Errorf("%w: no stored credentials", ErrUnavailable)
	}
	return nil
}

// call exchanges a client-credentials kind's credentials for a token at the
// kind's endpoint and records the outcome.
func (b *Broker) call(ctx context.Context, k clientCredentials, f fetchReq, creds store.Credentials) (Token, error) {
	cc := &clientcredentials.Config{
		ClientID:     creds.ClientID.Reveal(),
		ClientSecret: creds.ClientSecret.Reveal(),
		TokenURL:     b.tokenURL,
		Scopes:       f.scopes,
		AuthStyle:    oauth2.AuthStyleInParams, // in the form body, never a header
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, b.httpClient)
	tok, _, uerr := b.exchange(ctx, f, grantClientCredentials, f.scopes, false, func() (*oauth2.Token, error) { return cc.Token(ctx) })
	if uerr == nil {
		k.record(ctx, f, "")
		return tok, nil
	}
	// Upstream error text may quote what was sent; scrub before it can
	// reach an error or a log line.
	uerr.scrub(cc.ClientID, cc.ClientSecret)
	attrs := append(k.attrs(f), slog.Int("status", uerr.status), slog.String("code", uerr.code), slog.String("description", uerr.desc))
	switch uerr.kind {
	case kindRejected:
		k.record(ctx, f, "invalid_client")
		if err := k.markRejected(ctx, f, creds.Version, "invalid_client"); err != nil {
			b.log.LogAttrs(ctx, slog.LevelError, "marking credentials rejected failed", append(attrs, slog.Any("error", err))...)
		}
		b.log.LogAttrs(ctx, slog.LevelWarn, k.label()+" credentials rejected by token endpoint", attrs...)
		return Token{}, fmt.Errorf("%w: %s", k.rejected(), uerr.summary())
	case kindInvalidScope:
		k.record(ctx, f, "invalid_scope")
		b.log.LogAttrs(ctx, slog.LevelInfo, "token endpoint refused scopes", attrs...)
		return Token{}, fmt.Errorf("%w: %s", ErrInvalidScope, uerr.summary())
	default:
		k.record(ctx, f, "unavailable")
		b.log.LogAttrs(ctx, slog.LevelError, "token endpoint unavailable", attrs...)
		return Token{}, fmt.Errorf("%w: %s", ErrUnavailable, uerr.summary())
	}
}

// Grant names, for logs.
const (
	grantClientCredentials = "client_credentials"
	grantRefreshToken      = "refresh_token"
	grantPassword          = "password"
)

// exchange is the one retry loop of every kind: it makes a token request
// with call, retrying transient failures with exponential backoff and full
// jitter, or the server's Retry-After, up to MaxAttempts. With retryLost, a
// failure after which Trackunit may have processed the request without the
// broker seeing its answer (a broken connection, a time-out, a 200 that is
// not a token) is retried once at once, which a rotating refresh token's
// grace window accepts; lost reports that the second answer was lost too.
// The raw answer comes with the token, for what a kind reads besides.
func (b *Broker) exchange(ctx context.Context, f fetchReq, grant string, requested []string, retryLost bool,
	call func() (*oauth2.Token, error)) (tok Token, raw *oauth2.Token, uerr *upstreamError) {
	lostOnce := false
	for attempt := 1; ; attempt++ {
		sent := b.now()
		began := time.Now()
		ot, err := call()
		if err == nil {
			tok, uerr = toToken(ot, sent, requested)
		} else {
			uerr = classify(ctx, err, sent)
		}
		b.obs.UpstreamCall(b.kind.endpoint(), outcomeOf(uerr), time.Since(began))
		if uerr == nil {
			return tok, ot, nil
		}
		uerr.attempts = attempt
		if ctx.Err() != nil {
			return Token{}, nil, uerr
		}
		if retryLost && answerMayBeLost(uerr) {
			if lostOnce {
				uerr.lost = true
				return Token{}, nil, uerr
			}
			lostOnce = true
			b.log.LogAttrs(ctx, slog.LevelWarn, "token answer lost; retrying at once with the same grant",
				append(b.kind.attrs(f), slog.String("grant", grant), slog.String("outcome", uerr.outcome))...)
			continue
		}
		if uerr.kind != kindTransient || attempt >= b.maxAttempts {
			return Token{}, nil, uerr
		}
		delay := b.delay(attempt, uerr)
		b.log.LogAttrs(ctx, slog.LevelWarn, "token endpoint attempt failed; retrying",
			append(b.kind.attrs(f), slog.String("grant", grant), slog.Int("attempt", attempt), slog.String("outcome", uerr.outcome),
				slog.Int("status", uerr.status), slog.Duration("retry_in", delay))...)
		if err := b.sleep(ctx, delay); err != nil {
			return Token{}, nil, uerr
		}
	}
}

// answerMayBeLost reports a failure after which Trackunit may have
// processed the request (and spent a refresh token) without the broker
// seeing its answer.
func answerMayBeLost(e *upstreamError) bool {
	return e.outcome == "network_error" || e.outcome == "timeout" || (e.outcome == "bad_response" && e.status == 200)
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
