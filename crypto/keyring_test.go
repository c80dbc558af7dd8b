package crypto

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// key returns a deterministic, distinct 32-byte key for tests.
func key(b byte) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('A'+b)), KeySize)))
}

func TestParseKeyring(t *testing.T) {
	k, err := ParseKeyring(" k2:" + key(2) + ", k1:" + strings.TrimRight(key(1), "=") + "\n")
	if err != nil {
		t.Fatalf("ParseKeyring: %v", err)
	}
	if got, want := k.PrimaryID(), "k2"; got != want {
		t.Errorf("PrimaryID = %q, want %q", got, want)
	}
	if diff := cmp.Diff([]string{"k2", "k1"}, k.IDs()); diff != "" {
		t.Errorf("IDs (-want +got):\n%s", diff)
	}
	for id, want := range map[string]bool{"k1": true, "k2": true, "k3": false, "": false} {
		if got := k.Has(id); got != want {
			t.Errorf("Has(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestParseKeyringErrors(t *testing.T) {
	short := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")) // 16 bytes
	long := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("L", 33)))
	tests := []struct {
		name string
		spec string
		want []string // substrings of the error
	}{
		{"empty spec", "  ", []string{"no keys"}},
		{"empty entry", "a:" + key(1) + ",,b:" + key(2), []string{"entry 2: empty"}},
		{"no colon", key(1), []string{"entry 1: missing ':'"}},
		{"empty id", ":" + key(1), []string{"entry 1: empty key id"}},
		{"id with colon", "a:b:" + key(1), []string{"entry 1: key id contains ':'"}},
		{"id with space", "a b:" + key(1), []string{"entry 1: key id contains white space"}},
		{"id with odd char", "a/b:" + key(1), []string{"entry 1: key id may only contain"}},
		{"id too long", strings.Repeat("x", 33) + ":" + key(1), []string{"entry 1: key id longer than 32"}},
		{"empty key", "a:", []string{`entry 1 (id "a"): empty key`}},
		{"bad base64", "a:" + key(1)[:20] + "!!" + key(1)[22:], []string{`entry 1 (id "a"): key is not valid standard base64`}},
		{"short key", "a:" + key(1) + ",b:" + short, []string{`entry 2 (id "b"): key is 16 bytes, want 32`}},
		{"long key", "a:" + long, []string{`entry 1 (id "a"): key is 33 bytes, want 32`}},
		{"duplicate id", "a:" + key(1) + ",a:" + key(2), []string{`entry 2 (id "a"): duplicate key id, first used by entry 1`}},
		{"duplicate material", "a:" + key(1) + ",b:" + key(1), []string{`entry 2 (id "b"): same key as entry 1 (id "a")`}},
		{
			"every bad entry named",
			"a:" + short + ",ok:" + key(1) + ",:" + key(2) + ",c d:" + key(3),
			[]string{`entry 1 (id "a"): key is 16 bytes`, "entry 3: empty key id", "entry 4: key id contains white space"},
		},
		{"reversed entry", key(1) + ":a", []string{"entry 1: key id longer than 32", "entry 1: key is not valid standard base64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKeyring(tt.spec)
			if err == nil {
				t.Fatalf("ParseKeyring succeeded with %v, want error", k)
			}
			if !errors.Is(err, ErrInvalidKeyring) {
				t.Errorf("error %v does not wrap ErrInvalidKeyring", err)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			for _, m := range []string{key(1), key(2), key(3), short, long, key(1)[:20]} {
				if strings.Contains(msg, m) || strings.Contains(msg, strings.TrimRight(m, "=")[:16]) {
					t.Errorf("error %q contains key material", msg)
				}
			}
		})
	}
}

func TestGenerateKey(t *testing.T) {
	a, err := GenerateKey("2026-01")
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	b, err := GenerateKey("other")
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	if !strings.HasPrefix(a, "2026-01:") {
		t.Errorf("entry %q lacks its id prefix", a)
	}
	k, err := ParseKeyring(a + "," + b)
	if err != nil {
		t.Fatalf("generated entries do not parse: %v", err)
	}
	if diff := cmp.Diff([]string{"2026-01", "other"}, k.IDs()); diff != "" {
		t.Errorf("IDs (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "a:b", "a,b", "a b", strings.Repeat("x", 33)} {
		if _, err := GenerateKey(bad); !errors.Is(err, ErrInvalidKeyring) {
			t.Errorf("GenerateKey(%q) error = %v, want ErrInvalidKeyring", bad, err)
		}
	}
}

func TestKeyringNeverPrintsKeys(t *testing.T) {
	k, err := ParseKeyring("k1:" + key(1) + ",k2:" + key(2))
	if err != nil {
		t.Fatal(err)
	}
	want := "crypto.Keyring{k1,k2}"
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		if got := fmt.Sprintf(verb, k); got != want {
			t.Errorf("Sprintf(%q, keyring) = %q, want %q", verb, got, want)
		}
		if got := fmt.Sprintf(verb, *k); got != want {
			t.Errorf("Sprintf(%q, *keyring) = %q, want %q", verb, got, want)
		}
	}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("keys", "keyring", k)
	if out := logged.String(); !strings.Contains(out, "keyring.primary=k1") || strings.Contains(out, key(1)) || strings.Contains(out, "BBBB") {
		t.Errorf("log line %q: want the primary id and no key material", out)
	}
}

func TestDerive(t *testing.T) {
	a, err := ParseKeyring("k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=,k0:ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=")
	if err != nil {
		t.Fatal(err)
	}
	same, _ := ParseKeyring("k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	other, _ := ParseKeyring("k0:ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=")
	p := a.Derive("page-token")
	if len(p) != KeySize {
		t.Fatalf("derived %d bytes", len(p))
	}
	if !bytes.Equal(p, same.Derive("page-token")) {
		t.Error("the same primary key derives different keys")
	}
	if bytes.Equal(p, a.Derive("other")) || bytes.Equal(p, other.Derive("page-token")) {
		t.Error("another label or primary derives the same key")
	}
	if bytes.Contains(p, []byte("0123456789abcdef")) {
		t.Error("the derived key contains the primary key")
	}
}
