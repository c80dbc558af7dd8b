package crypto

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustKeyring(t *testing.T, spec string) *Keyring {
	t.Helper()
	k, err := ParseKeyring(spec)
	if err != nil {
		t.Fatalf("ParseKeyring: %v", err)
	}
	return k
}

var home = Location{Table: "installs", Row: "@org/app/6f1c0e9a-0000-4000-8000-000000000001", Column: "client_secret"}

func TestSealOpenRoundTrip(t *testing.T) {
	k := mustKeyring(t, "new:"+key(1)+",old:"+key(2))
	for _, plain := range [][]byte{[]byte("s3cr3t"), {}, bytes.Repeat([]byte{0}, 4096)} {
		id, ct, err := k.Seal(plain, home)
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		if id != "new" {
			t.Errorf("Seal used key %q, want the primary %q", id, "new")
		}
		if len(plain) > 0 && bytes.Contains(ct, plain) {
			t.Errorf("ciphertext contains the plaintext")
		}
		got, err := k.Open(id, ct, home)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if diff := cmp.Diff(plain, got, cmp.Comparer(bytes.Equal)); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	k := mustKeyring(t, "k:"+key(1))
	_, a, _ := k.Seal([]byte("same"), home)
	_, b, _ := k.Seal([]byte("same"), home)
	if bytes.Equal(a, b) || bytes.Equal(a[:nonceSize], b[:nonceSize]) {
		t.Errorf("two seals of one plaintext share a nonce or ciphertext")
	}
}

// TestOldKeyStillOpens: a ciphertext sealed while "old" was primary opens
// after "new" has been put in front of it.
func TestOldKeyStillOpens(t *testing.T) {
	before := mustKeyring(t, "old:"+key(2))
	id, ct, err := before.Seal([]byte("v"), home)
	if err != nil {
		t.Fatal(err)
	}
	after := mustKeyring(t, "new:"+key(1)+",old:"+key(2))
	got, err := after.Open(id, ct, home)
	if err != nil || string(got) != "v" {
		t.Fatalf("Open after rotation = %q, %v; want \"v\", nil", got, err)
	}
}

func TestOpenRefusesTampering(t *testing.T) {
	k := mustKeyring(t, "k1:"+key(1)+",k2:"+key(2))
	id, ct, err := k.Seal([]byte("client-secret-value"), home)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		c := bytes.Clone(ct)
		c[i] ^= 0x01
		return c
	}
	otherRow, otherColumn, otherTable := home, home, home
	otherRow.Row = "@org/app/6f1c0e9a-0000-4000-8000-000000000002"
	otherColumn.Column = "client_id"
	otherTable.Table = "api_users"

	tests := []struct {
		name  string
		keyID string
		ct    []byte
		loc   Location
		want  error
	}{
		{"copied to another row", id, ct, otherRow, ErrDecrypt},
		{"copied to another column", id, ct, otherColumn, ErrDecrypt},
		{"copied to another table", id, ct, otherTable, ErrDecrypt},
		{"bit flip in nonce", id, flip(0), home, ErrDecrypt},
		{"bit flip in body", id, flip(nonceSize + 2), home, ErrDecrypt},
		{"bit flip in tag", id, flip(len(ct) - 1), home, ErrDecrypt},
		{"truncated", id, ct[:len(ct)-1], home, ErrDecrypt},
		{"too short for a nonce", id, ct[:5], home, ErrDecrypt},
		{"relabelled to another valid key", "k2", ct, home, ErrDecrypt},
		{"unknown key id", "k9", ct, home, ErrUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k.Open(tt.keyID, tt.ct, tt.loc)
			if !errors.Is(err, tt.want) {
				t.Errorf("Open error = %v, want %v", err, tt.want)
			}
			if got != nil {
				t.Errorf("Open returned plaintext %q alongside an error", got)
			}
		})
	}
}

// TestKeyIDIsAuthenticated proves the key id is in the associated data on
// its own: the same key material under another id does not open. (One
// keyring refuses duplicate material, so two keyrings stand in for an
// operator who renamed a key.)
func TestKeyIDIsAuthenticated(t *testing.T) {
	a := mustKeyring(t, "a:"+key(1))
	b := mustKeyring(t, "b:"+key(1))
	_, ct, err := a.Seal([]byte("x"), home)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open("b", ct, home); !errors.Is(err, ErrDecrypt) {
		t.Errorf("Open under a renamed key: error = %v, want ErrDecrypt", err)
	}
}

func TestAADIsUnambiguous(t *testing.T) {
	tuples := [][4]string{
		{"installs", "a/b", "c", "k"},
		{"installs", "a", "b/c", "k"},
		{"installs", "a/bc", "", "k"},
		{"installsa", "/b", "c", "k"},
		{"installs", "a/b", "ck", ""},
		{"installs", "a/b", "c", "k2"},
	}
	seen := map[string]int{}
	for i, tu := range tuples {
		s := string(AAD(tu[0], tu[1], tu[2], tu[3]))
		if j, dup := seen[s]; dup {
			t.Errorf("AAD of tuple %d equals AAD of tuple %d", i, j)
		}
		seen[s] = i
	}
	if !bytes.Equal(AAD("t", "r", "c", "k"), AAD("t", "r", "c", "k")) {
		t.Errorf("AAD is not deterministic")
	}
}
