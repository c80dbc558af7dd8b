// Package token owns the token brokers: one core and a small file set per
// Trackunit credential kind.
//
// The core (broker.go, cache.go, flight.go, shared.go, upstream.go,
// policy.go, classify.go, limits.go, kind.go) caches tokens per
// (credential, scope set) with single-flight and refresh-ahead with
// jitter, shares the current token of every credential with the whole
// fleet through Postgres with one mint per lifetime (a lease taken in one
// short statement, Trackunit called with no connection held, the token
// committed in a second statement that checks the lease is still ours),
// retries transient upstream failures honouring Retry-After, fails fast on
// rejected credentials, bounds the detached fetches in flight, and reports
// to one Observer. A kind supplies what differs:
//
//   - install_*: IrisX installs at POST {auth}/apptoken (client
//     credentials of each install, tokens shared in shared_tokens; the
//     lastTokenAt / lastError results, Forget). Broker, also named
//     InstallTokens.
//   - apikey_*: API keys at POST {auth}/token/v2 (client credentials, the
//     key's scopes, shared_tokens). APIKeyTokens.
//   - apiuser_*: API users at POST {auth}/token (password grant, then the
//     rotating refresh token). Their lease is their own api_users row, and
//     the grant rotates a secret: the core hands out such a token only once
//     the commit has stored the new refresh token, while the lease is ours
//     and the stored refresh token is still the one spent, so a spent
//     refresh token is never presented again and a crash between
//     Trackunit's answer and the commit costs at most the stored token's
//     grace window or a password grant. A cached token is checked against
//     the row every Revalidate (1 s). APIUserTokens.
//
// It knows nothing of HTTP handlers or RPC: callers classify its errors with
// errors.Is against the sentinels below and map them to status codes in one
// place.
//
// Decisions where the brief left a choice:
//
//   - Serving: a cached token is returned when it has more than MinValid left
//     (and at least a few seconds, so it does not expire on the wire). Once
//     it is inside its refresh window (RefreshMargin plus up to 20% jitter per
//     entry, at most half the token's whole lifetime) it is still served, and
//     one background refresh starts; a token another replica stored may be
//     inside its window when first read, and starts one at once. So during
//     an upstream outage a cached token keeps being served for as long as it
//     satisfies MinValid; after that callers get ErrUnavailable.
//   - A token minted for a caller is returned even when its lifetime is below
//     that caller's MinValid: it is the freshest token there is. Callers
//     should bound MinValid well below the upstream lifetime (3600 s).
//   - Upstream errors: any 401 or an invalid_client code (either error body
//     shape) marks the install credentials_rejected (ErrCredentialsRejected);
//     invalid_scope is ErrInvalidScope; 408, 429, 5xx, temporarily_unavailable,
//     network errors, time-outs and error responses without an OAuth error
//     body (an HTML error page) are retried; any other OAuth error code on a
//     4xx (invalid_request, unauthorized_client, ...) is ErrUnavailable at once,
//     not retried, because repeating the same request cannot succeed. A
//     refresh grant whose answer may have been lost (a broken connection, a
//     time-out, a 200 without a token) is repeated once at once with the
//     same refresh token, then the password grant is used.
//   - Invalidate wins over a fetch in flight: the fetched token is discarded,
//     never cached, and the fetch starts over with freshly read credentials
//     (so an uninstall during a fetch yields ErrUninstalled, not a token).
//   - The cache bound evicts the entry that expires soonest: expired entries
//     first, then the oldest (tokens of one endpoint share a lifetime).
package token
