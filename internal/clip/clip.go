// Package clip bounds untrusted text before it reaches a log line, an error
// message or a column: one cut that never splits a UTF-8 sequence, shared
// by the store and the token core.
package clip

import "unicode/utf8"

// Bytes returns s cut to at most n bytes, shortened further to the start of
// the UTF-8 sequence the cut would split. s is returned as it is when it
// fits; n <= 0 gives "".
func Bytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
