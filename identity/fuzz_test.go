package identity

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzVerify feeds Verify arbitrary strings seeded with valid and hostile
// tokens. Nothing may panic, every rejection must be a proper *Error, and
// anything accepted must carry exactly the claims the test keys signed:
// a mutation that changes any signed byte has to be refused.
func FuzzVerify(f *testing.F) {
	testKeys(f)
	cfg := defaultConfig()
	cfg.JWKSURL = "http://127.0.0.1:1/jwks" // Run never starts: no network
	cfg.Now = newClock().Now
	v, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	set, _, err := parseKeySet(jwksJSON(f, defaultKeys(f)...), testNow)
	if err != nil {
		f.Fatal(err)
	}
	v.keys.Store(set)

	valid := validClaims()
	for _, k := range []*testKey{rsaA, ec256, edKey} {
		f.Add(mint(f, k, "", valid, nil))
	}
	f.Add("Bearer " + mint(f, rsaA, "PS256", valid, nil))
	for _, a := range attackTokens(f, "http://127.0.0.1:1") {
		if len(a.token) <= 2*MaxTokenBytes {
			f.Add(a.token)
		}
	}

	want := validIdentity()
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.Verify(context.Background(), tok)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) || e.Reason == "" {
				t.Fatalf("rejection is not a proper *Error: %#v", err)
			}
			if id != nil {
				t.Fatal("Verify returned an identity with an error")
			}
			return
		}
		if diff := cmp.Diff(want, id); diff != "" {
			t.Fatalf("accepted claims nobody signed (-want +got):\n%s", diff)
		}
	})
}
