package api

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// proxyPrefix is the start of every proxied path.
const proxyPrefix = "/iris/accounts/"

// proxyTarget is where one proxied request goes, decided from its path
// before any token is minted.
type proxyTarget struct {
	account string // canonical UUID
	path    string // decoded, relative to IRIS_API_URL, no leading slash
	rawPath string // as the caller encoded it
	graphql bool   // the path is under api/graphql
}

var (
	errProxyAbsolute  = errors.New("the request target must be a path, not an absolute URL")
	errProxyAccount   = errors.New("the account id must be a UUID")
	errProxyNoPath    = errors.New("a path after the account id is required")
	errProxyEmpty     = errors.New("the path has an empty segment")
	errProxyDots      = errors.New("the path has a . or .. segment")
	errProxySlash     = errors.New("the path has an encoded slash or a backslash")
	errProxyControl   = errors.New("the path has a control character")
	errProxyEncoding  = errors.New("the path is not validly percent-encoded")
	errProxyAuthority = errors.New("the path would name a host")
)

// parseProxyTarget checks r's path and splits it. It works on the path as
// the caller encoded it, so an encoded "..", "/" or "\" is seen as such and
// refused rather than decoded into something the upstream would resolve.
// Every segment but a trailing one must be non-empty, so "//host" can
// never become an authority, whatever the upstream or a library between
// makes of the path.
func parseProxyTarget(r *http.Request) (proxyTarget, error) {
	if r.URL.IsAbs() || r.URL.Host != "" || r.URL.Opaque != "" {
		return proxyTarget{}, errProxyAbsolute
	}
	escaped := r.URL.EscapedPath()
	rest, ok := strings.CutPrefix(escaped, proxyPrefix)
	if !ok {
		return proxyTarget{}, errProxyNoPath
	}
	account, rest, _ := strings.Cut(rest, "/")
	if !isUUID(account) {
		return proxyTarget{}, errProxyAccount
	}
	if rest == "" {
		return proxyTarget{}, errProxyNoPath
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; c < 0x20 || c == 0x7f {
			return proxyTarget{}, errProxyControl
		} else if c == '\\' {
			return proxyTarget{}, errProxySlash
		}
	}
	segs := strings.Split(rest, "/")
	decoded := make([]string, len(segs))
	for i, seg := range segs {
		if seg == "" {
			if i == len(segs)-1 && i > 0 {
				continue // a trailing slash, as in api/graphql/
			}
			return proxyTarget{}, errProxyEmpty
		}
		d, err := checkSegment(seg)
		if err != nil {
			return proxyTarget{}, err
		}
		if i == 0 && strings.ContainsAny(d, ":@") {
			// "http:" or "user@host" first: only a URL, never an IRIS path.
			return proxyTarget{}, errProxyAuthority
		}
		decoded[i] = d
	}
	return proxyTarget{
		account: canonicalUUID(account),
		path:    strings.Join(decoded, "/"),
		rawPath: rest,
		graphql: len(decoded) >= 2 && strings.EqualFold(decoded[0], "api") && strings.EqualFold(decoded[1], "graphql"),
	}, nil
}

// checkSegment decodes one path segment and refuses those an upstream
// could read as leaving the path: dot segments (with ";params" or doubly
// encoded too), slashes and backslashes however encoded, control bytes.
func checkSegment(seg string) (string, error) {
	d, err := url.PathUnescape(seg)
	if err != nil {
		return "", errProxyEncoding
	}
	if err := checkDecoded(d); err != nil {
		return "", err
	}
	if strings.Contains(d, "%") {
		// A doubly encoded "%252e%252e" is ".." to an upstream that decodes
		// twice; a "%" that is not an escape is left alone.
		if dd, err := url.PathUnescape(d); err == nil {
			if err := checkDecoded(dd); err != nil {
				return "", err
			}
		}
	}
	return d, nil
}

func checkDecoded(d string) error {
	for i := 0; i < len(d); i++ {
		switch c := d[i]; {
		case c < 0x20 || c == 0x7f:
			return errProxyControl
		case c == '/' || c == '\\':
			return errProxySlash
		}
	}
	base, _, _ := strings.Cut(d, ";")
	if base == "." || base == ".." {
		return errProxyDots
	}
	return nil
}

// proxyApp is the app a proxied call acts for: Irisx-App-Id, else the one
// allowed app.
func proxyApp(h http.Header, allowed []string) (string, error) {
	if app := strings.TrimSpace(h.Get("Irisx-App-Id")); app != "" {
		return app, nil
	}
	if len(allowed) == 1 {
		return allowed[0], nil
	}
	return "", errors.New("Irisx-App-Id is required unless ALLOWED_APP_IDS names exactly one app")
}

// proxyScopes are Irisx-Scopes (space-separated); none means the token
// core's DEFAULT_SCOPES.
func proxyScopes(h http.Header) []string {
	return strings.Fields(strings.Join(h.Values("Irisx-Scopes"), " "))
}
