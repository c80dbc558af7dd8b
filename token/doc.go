// Package token owns the token brokers. Broker serves IrisX installs: it
// mints IRIS API access tokens at Trackunit's POST {auth}/apptoken with each
// install's client credentials, caches them per (app, account, scope set),
// renews them ahead of expiry, shares one upstream call among concurrent
// callers, retries transient upstream failures, marks rejected credentials
// in the store, and records each install's lastTokenAt / lastError
// asynchronously. APIUsers serves Trackunit API users at POST {auth}/token
// (password grant, rotating refresh tokens), with at most one refresh per
// user across every replica (apiuser.go).
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
//     entry) it is still served, and one background refresh starts. So during
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
//     not retried, because repeating the same request cannot succeed.
//   - Invalidate wins over a fetch in flight: the fetched token is discarded,
//     never cached, and the fetch starts over with freshly read credentials
//     (so an uninstall during a fetch yields ErrUninstalled, not a token).
//   - The cache bound evicts the entry that expires soonest: expired entries
//     first, then the oldest (tokens of one endpoint share a lifetime).
package token
