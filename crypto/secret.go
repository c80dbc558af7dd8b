package crypto

import (
	"encoding/json"
	"fmt"
	"log/slog"
)

// Secret holds a credential (client secret, password, refresh or access
// token). Every way of printing it redacts it, so it cannot leak into a log
// line, an error message or a JSON response by accident; Reveal is the one
// explicit way to read it.
type Secret string

const redacted = "[REDACTED]"

// Reveal returns the secret's value. Call it only where the value is sent to
// its one legitimate destination (an upstream form body, a cipher, a token
// response).
func (s Secret) Reveal() string { return string(s) }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s == "" }

// String redacts the secret.
func (s Secret) String() string { return redacted }

// GoString redacts the secret for %#v.
func (s Secret) GoString() string { return redacted }

// Format redacts the secret for every fmt verb, including %s, %q, %v and %x.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue redacts the secret in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON redacts the secret in JSON output.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(redacted) }

// MarshalText redacts the secret wherever text marshalling is used.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
