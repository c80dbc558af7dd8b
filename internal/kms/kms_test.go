package kms

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"gocloud.dev/secrets/localsecrets"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
)

// localKey returns a fresh base64key:// URL.
func localKey(t *testing.T) string {
	t.Helper()
	k, err := localsecrets.NewRandomKey()
	if err != nil {
		t.Fatal(err)
	}
	return "base64key://" + base64.URLEncoding.EncodeToString(k[:])
}

var loc = crypto.Location{Table: "installs", Row: "app/acct", Column: "client_secret"}

// sealsAcross checks that a ciphertext sealed by a opens under b.
func sealsAcross(t *testing.T, a, b *crypto.Keyring) {
	t.Helper()
	id, ct, err := a.Seal([]byte("the client secret"), loc)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := b.Open(id, ct, loc)
	if err != nil || string(pt) != "the client secret" {
		t.Errorf("open under the other keyring: %q, %v", pt, err)
	}
}

// assertClean fails when msg holds any of the secrets.
func assertClean(t *testing.T, msg string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			t.Errorf("error %q contains a secret (%d characters)", msg, len(s))
		}
	}
}

func TestGenerateUnwrapRoundTrip(t *testing.T) {
	ctx := context.Background()
	url := localKey(t)
	e1, err := Generate(ctx, url, "k2")
	if err != nil {
		t.Fatal(err)
	}
	e2, err := Generate(ctx, url, "k1")
	if err != nil {
		t.Fatal(err)
	}
	id, wrapped, _ := strings.Cut(e1.Reveal(), ":")
	if id != "k2" || len(wrapped) <= 44 {
		t.Errorf("entry: id %q, %d characters of wrapped key", id, len(wrapped))
	}
	if _, err := crypto.ParseKeyring(e1.Reveal()); err == nil {
		t.Error("a wrapped entry parses as a plain key")
	}
	spec := e1 + "," + e2
	kr, err := UnwrapKeyring(ctx, url, spec)
	if err != nil {
		t.Fatal(err)
	}
	if kr.PrimaryID() != "k2" || strings.Join(kr.IDs(), ",") != "k2,k1" {
		t.Errorf("ids %v", kr.IDs())
	}
	again, err := ResolveKeyring(ctx, url, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	sealsAcross(t, kr, again)
}

func TestUnwrapRefusesWithoutLeaking(t *testing.T) {
	ctx := context.Background()
	url := localKey(t)
	entry, err := Generate(ctx, url, "k1")
	if err != nil {
		t.Fatal(err)
	}
	wrapped := strings.SplitN(entry.Reveal(), ":", 2)[1]
	other := localKey(t)
	tests := []struct {
		name, url, spec, want string
	}{
		{"wrong KMS key", other, entry.Reveal(), "KMS_KEY_URL: cannot unwrap entry 1 of ENCRYPTION_KEYS with the base64key KMS key"},
		{"bad base64key", "base64key://" + wrapped[:20], entry.Reveal(), "KMS_KEY_URL: cannot open the base64key KMS key"},
		{"random base64key", "base64key://", entry.Reveal(), "KMS_KEY_URL: base64key:// needs a key"},
		{"unknown scheme", "vault://" + wrapped, entry.Reveal(), `KMS_KEY_URL: scheme "vault" is not supported`},
		{"not base64", url, "k1:%%%%", "ENCRYPTION_KEYS: entry 1: the wrapped key is not valid standard base64"},
		{"no id", url, ":" + wrapped, "ENCRYPTION_KEYS: entry 1: want id:base64(wrapped key)"},
		{"bad id", url, "bad id:" + wrapped, "not a valid keyring"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := UnwrapKeyring(ctx, tt.url, crypto.Secret(tt.spec))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrKMS) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			assertClean(t, err.Error(), strings.TrimPrefix(url, "base64key://"), strings.TrimPrefix(other, "base64key://"), wrapped, wrapped[:20])
		})
	}
}

func TestRewrap(t *testing.T) {
	ctx := context.Background()
	from, to := localKey(t), localKey(t)
	a, _ := Generate(ctx, from, "new")
	b, _ := Generate(ctx, from, "old")
	spec := a + "," + b
	before, err := UnwrapKeyring(ctx, from, spec)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Rewrap(ctx, from, to, spec)
	if err != nil {
		t.Fatal(err)
	}
	if out == spec {
		t.Fatal("rewrap returned its input")
	}
	if _, err := UnwrapKeyring(ctx, from, out); err == nil {
		t.Error("the re-wrapped keys still unwrap under the old KMS key")
	}
	after, err := UnwrapKeyring(ctx, to, out)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(after.IDs(), ",") != "new,old" {
		t.Errorf("ids after rewrap: %v", after.IDs())
	}
	// The data keys are unchanged: what the old keyring sealed opens.
	sealsAcross(t, before, after)

	// From plain keys (first move to a KMS).
	plain, _ := crypto.GenerateKey("p1")
	out, err = Rewrap(ctx, "", to, crypto.Secret(plain))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := UnwrapKeyring(ctx, to, out)
	if err != nil {
		t.Fatal(err)
	}
	sealsAcross(t, kr, testkit.Keyring(t, plain))

	// A wrong --from fails naming the variable and changes nothing.
	if _, err := Rewrap(ctx, to, from, spec); err == nil || !strings.Contains(err.Error(), "KMS_KEY_URL") {
		t.Errorf("rewrap with the wrong old key: %v", err)
	}
}

// A KMS that accepts connections and never answers fails the start within
// the bound, naming KMS_KEY_URL. hashivault ignores the context, so this
// also proves the bound does not rely on the driver.
func TestUnwrapTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	t.Setenv("VAULT_SERVER_URL", "http://"+ln.Addr().String())
	t.Setenv("VAULT_SERVER_TOKEN", "vault-token-for-tests")
	old := timeout
	timeout = 300 * time.Millisecond
	defer func() { timeout = old }()

	start := time.Now()
	spec := crypto.Secret("k1:" + base64.StdEncoding.EncodeToString([]byte("vault:v1:d3JhcHBlZA==")))
	_, err = UnwrapKeyring(context.Background(), "hashivault://irisx-data-keys", spec)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "KMS_KEY_URL: no answer from the hashivault KMS within 300ms") {
		t.Fatalf("err = %v", err)
	}
	if took > 2*time.Second {
		t.Errorf("took %s, bound is 300ms", took)
	}
	assertClean(t, err.Error(), "vault-token-for-tests", "vault:v1:d3JhcHBlZA==", "irisx-data-keys")
}
