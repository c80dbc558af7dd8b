package events

import (
	"testing"
	"time"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// The Standard Webhooks specification's published test vector.
func TestSignerSpecVector(t *testing.T) {
	s, err := NewSigner(crypto.Secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
	if err != nil {
		t.Fatal(err)
	}
	got := s.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %q, want %q", got, want)
	}
}

func TestNewSignerRefusesMalformedSecrets(t *testing.T) {
	for _, s := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_!!!"} {
		if _, err := NewSigner(crypto.Secret(s)); err == nil {
			t.Errorf("NewSigner(%q) accepted", s)
		}
	}
}
