package clip

import (
	"testing"
	"unicode/utf8"
)

func TestBytes(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exact", 5, "exact"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"},  // é is 2 bytes: cutting after its first would split it
		{"a€b", 3, "a"}, // € is 3 bytes
		{"a€b", 4, "a€"},
		{"€", 0, ""},
		{"abc", -1, ""},
		{"", 3, ""},
	}
	for _, tc := range tests {
		got := Bytes(tc.s, tc.n)
		if got != tc.want {
			t.Errorf("Bytes(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
		if !utf8.ValidString(got) || len(got) > max(tc.n, 0) && got != tc.s {
			t.Errorf("Bytes(%q, %d) = %q: not valid UTF-8 or too long", tc.s, tc.n, got)
		}
	}
}

func FuzzBytes(f *testing.F) {
	f.Add("a€bé", 3)
	f.Fuzz(func(t *testing.T, s string, n int) {
		got := Bytes(s, n)
		if len(s) <= n {
			if got != s {
				t.Fatalf("Bytes(%q, %d) = %q, want s unchanged", s, n, got)
			}
			return
		}
		if len(got) > max(n, 0) || len(s) > 0 && got != s[:len(got)] {
			t.Fatalf("Bytes(%q, %d) = %q: not a prefix of at most n bytes", s, n, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("Bytes(%q, %d) = %q split a UTF-8 sequence", s, n, got)
		}
	})
}
