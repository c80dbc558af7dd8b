package token

import (
	"fmt"
	"slices"
	"strings"

	"github.com/irisx-broker/irisx-broker/internal/clip"
	"github.com/irisx-broker/irisx-broker/store"
)

// validID refuses what would make cache keys ambiguous.
func validID(s string) bool {
	return s != "" && len(s) <= 512 && strings.IndexByte(s, 0) < 0
}

// appendKey appends app NUL account NUL space-joined scopes.
func appendKey(dst []byte, app, account string, scopes []string) []byte {
	dst = append(dst, app...)
	dst = append(dst, 0)
	dst = append(dst, account...)
	dst = append(dst, 0)
	for i, s := range scopes {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = append(dst, s...)
	}
	return dst
}

// normalizeScopes validates scopes as RFC 6749 scope-tokens and returns them
// sorted and de-duplicated, empty strings dropped. Input that is already
// normalized is returned as is, without allocating; callers must not retain
// it.
func normalizeScopes(in []string) ([]string, error) {
	normalized := true
	for i, s := range in {
		if s == "" {
			normalized = false
			continue
		}
		if !store.ValidScope(s) {
			return nil, fmt.Errorf("%w: malformed scope %q", ErrInvalidScope, truncate(s, 64))
		}
		if i > 0 && in[i-1] >= s {
			normalized = false
		}
	}
	if normalized {
		return in, nil
	}
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// truncate bounds s to about n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return clip.Bytes(s, n) + "..."
}
