package identity

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Verdicts of a Profile.
const (
	VerdictAccepted = "accepted"
	VerdictRefused  = "refused"
)

// Bounds of a Profile. A refused token is attacker input, so every string
// is cut and escaped, and lists are cut: the longest profile stays a few
// kilobytes whatever the token holds.
const (
	// MaxProfileValue caps alg, kid, typ, iss and each aud entry, in bytes
	// after escaping.
	MaxProfileValue = 200
	// MaxProfileName caps each claim name, in bytes after escaping.
	MaxProfileName = 64
	// MaxProfileNames caps how many claim names are kept (ClaimCount has
	// the true number).
	MaxProfileNames = 40
	// MaxProfileAud caps how many aud entries are kept.
	MaxProfileAud = 5
)

// truncMark ends a value that was cut.
const truncMark = "…"

// Profile is the non-secret shape of one identity token and its verdict:
// what an operator needs to configure IDENTITY_ISSUER and IDENTITY_AUDIENCE
// from a real callback. It holds the header's alg, kid and typ, the values
// of iss and aud (public identifiers), the sorted names of the claims and
// two durations, never the token, its signature or any other claim value.
// Every string is length-capped and has its control characters escaped.
type Profile struct {
	// Verdict is VerdictAccepted or VerdictRefused.
	Verdict string
	// Rule is the Reason that refused the token; "" when accepted.
	Rule string
	// Alg, Kid and Typ are the header members ("" when absent).
	Alg, Kid, Typ string
	// Iss is the iss claim ("" when absent or not a string).
	Iss string
	// Aud is the aud claim as a list (a single string gives one entry).
	Aud []string
	// Claims are the sorted names of the payload's members, at most
	// MaxProfileNames of them.
	Claims []string
	// ClaimCount is the number of payload members, Claims may be shorter.
	ClaimCount int
	// Age is now - iat and Lifetime is exp - iat, when HasAge and
	// HasLifetime (both need a numeric iat, Lifetime also a numeric exp).
	Age, Lifetime       time.Duration
	HasAge, HasLifetime bool
	// Decoded is false when the token could not be split and decoded (too
	// large, malformed): the profile then holds only the verdict and rule.
	Decoded bool
}

// Refused returns a copy of p refused by rule, for a rule the caller
// applies after verification (CheckBody's claim_mismatch).
func (p Profile) Refused(rule string) Profile {
	p.Verdict, p.Rule = VerdictRefused, rule
	return p
}

// LogAttrs are the profile as log attributes, snake_case like every key.
func (p Profile) LogAttrs() []slog.Attr {
	a := []slog.Attr{slog.String("verdict", p.Verdict)}
	if p.Rule != "" {
		a = append(a, slog.String("rule", p.Rule))
	}
	a = append(a,
		slog.String("alg", p.Alg),
		slog.String("kid", p.Kid),
		slog.String("typ", p.Typ),
		slog.String("iss", p.Iss),
		slog.Any("aud", nonNil(p.Aud)),
		slog.Any("claims", nonNil(p.Claims)),
		slog.Int("claim_count", p.ClaimCount))
	if p.HasAge {
		a = append(a, slog.String("age", p.Age.String()))
	}
	if p.HasLifetime {
		a = append(a, slog.String("lifetime", p.Lifetime.String()))
	}
	return a
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Shape is the profile without its verdict, kid and times, as one line:
// tokens of one issuer share it, so the admin page groups by it.
func (p Profile) Shape() string {
	if !p.Decoded {
		return "undecodable token"
	}
	var b strings.Builder
	b.WriteString("alg=" + orDash(p.Alg) + " typ=" + orDash(p.Typ) + " iss=" + orDash(p.Iss))
	b.WriteString(" aud=[" + strings.Join(p.Aud, " ") + "]")
	b.WriteString(" claims [" + strings.Join(p.Claims, " "))
	if p.ClaimCount > len(p.Claims) {
		b.WriteString(" … " + strconv.Itoa(p.ClaimCount-len(p.Claims)) + " more")
	}
	b.WriteString("]")
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// tokenParts are a token's decoded header and payload, kept by verify for
// the profile; payload is nil when the token did not decode that far.
type tokenParts struct {
	header, payload []byte
}

// buildProfile reads the shape of a token from its decoded parts. The parts
// may be unverified and hostile: nothing here fails, and every value is cut.
func buildProfile(parts *tokenParts, now time.Time, e *Error) Profile {
	p := Profile{Verdict: VerdictAccepted}
	if e != nil {
		p.Verdict, p.Rule = VerdictRefused, e.Reason
	}
	if parts.header == nil {
		return p
	}
	p.Decoded = true
	var h map[string]json.RawMessage
	if json.Unmarshal(parts.header, &h) == nil {
		p.Alg = profileString(h["alg"])
		p.Kid = profileString(h["kid"])
		p.Typ = profileString(h["typ"])
	}
	var c map[string]json.RawMessage
	if parts.payload == nil || json.Unmarshal(parts.payload, &c) != nil {
		return p
	}
	p.ClaimCount = len(c)
	names := make([]string, 0, len(c))
	for k := range c {
		names = append(names, k)
	}
	slices.Sort(names)
	if len(names) > MaxProfileNames {
		names = names[:MaxProfileNames]
	}
	p.Claims = make([]string, len(names))
	for i, n := range names {
		p.Claims[i] = Sanitize(n, MaxProfileName)
	}
	p.Iss = profileString(c["iss"])
	p.Aud = profileAud(c["aud"])
	if iat, ok := numericDate(c["iat"]); ok {
		p.Age, p.HasAge = now.Sub(iat), true
		if exp, ok := numericDate(c["exp"]); ok {
			p.Lifetime, p.HasLifetime = exp.Sub(iat), true
		}
	}
	return p
}

// profileString is a JSON string member, cut and escaped; other JSON types
// show as their type, so a numeric iss is visible as such.
func profileString(raw json.RawMessage) string {
	if raw == nil {
		return ""
	}
	if s, ok := jsonString(raw); ok {
		return Sanitize(s, MaxProfileValue)
	}
	return "<" + jsonType(raw) + ">"
}

func profileAud(raw json.RawMessage) []string {
	if raw == nil {
		return nil
	}
	if len(raw) == 0 || raw[0] != '[' {
		return []string{profileString(raw)}
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return []string{"<array>"}
	}
	out := make([]string, 0, min(len(list), MaxProfileAud+1))
	for i, r := range list {
		if i == MaxProfileAud {
			out = append(out, truncMark+strconv.Itoa(len(list)-i)+" more")
			break
		}
		out = append(out, profileString(r))
	}
	return out
}

func jsonType(raw json.RawMessage) string {
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	case '"':
		return "string"
	}
	return "number"
}

// Sanitize makes attacker-controlled text safe for a log line or a page:
// control and other non-printing characters, backslashes and invalid UTF-8
// become escapes (\u001b, \\, \xff), and the result is cut to at most max
// bytes plus a trailing "…" when anything was dropped.
func Sanitize(s string, max int) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '\\' || c >= 0x7f {
			clean = false
			break
		}
	}
	if clean && len(s) <= max {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), max) + len(truncMark))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		var esc string
		switch {
		case r == utf8.RuneError && n == 1:
			esc = `\x` + hex2(s[i])
		case r == '\\':
			esc = `\\`
		case !unicode.IsPrint(r) && r != ' ':
			if r > 0xffff {
				esc = `\U` + strconv.FormatInt(int64(r)|1<<32, 16)[1:]
			} else {
				esc = `\u` + strconv.FormatInt(int64(r)|1<<16, 16)[1:]
			}
		default:
			esc = s[i : i+n]
		}
		if b.Len()+len(esc) > max {
			b.WriteString(truncMark)
			return b.String()
		}
		b.WriteString(esc)
		i += n
	}
	return b.String()
}

func hex2(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&0xf]})
}
