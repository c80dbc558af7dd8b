// Package kms owns envelope encryption of the data keys: with KMS_KEY_URL
// set, every entry of ENCRYPTION_KEYS is `id:base64(wrapped)`, a data key
// wrapped by a KMS key (gocloud.dev/secrets: awskms://, gcpkms://,
// azurekeyvault://, hashivault://, or base64key:// for tests and local use).
// The service unwraps each entry once at start, within Timeout, and from
// then on seals and opens rows with the plain keyring in memory: no row ever
// costs a KMS call. crypto/ stays free of I/O; this package is the I/O.
//
// No error of this package holds a key, a wrapped key or the KMS URL (a
// base64key:// URL is the key itself); errors name KMS_KEY_URL and
// ENCRYPTION_KEYS and the entry by position and id.
package kms

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"gocloud.dev/secrets"
	// The KMS drivers KMS_KEY_URL may name.
	_ "gocloud.dev/secrets/awskms"
	_ "gocloud.dev/secrets/azurekeyvault"
	_ "gocloud.dev/secrets/gcpkms"
	_ "gocloud.dev/secrets/hashivault"
	_ "gocloud.dev/secrets/localsecrets"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// Timeout bounds all KMS work of one operation: opening the key and
// unwrapping (or wrapping) every entry. A KMS that does not answer must not
// hold a start forever, nor pass for a slow start.
const Timeout = 10 * time.Second

// Schemes are the KMS_KEY_URL schemes accepted, in the order documented.
var Schemes = []string{"awskms", "gcpkms", "azurekeyvault", "hashivault", "base64key"}

// ErrKMS is wrapped by every error of this package.
var ErrKMS = errors.New("kms")

// ResolveKeyring returns the keyring the configuration describes: plain
// when kmsURL is empty (config has already parsed it), else the entries of
// wrapped unwrapped under kmsURL. serve, dev and `keys reencrypt` call it
// right after loading the configuration.
func ResolveKeyring(ctx context.Context, kmsURL string, wrapped crypto.Secret, plain *crypto.Keyring) (*crypto.Keyring, error) {
	if kmsURL == "" {
		if plain == nil {
			return nil, fmt.Errorf("%w: ENCRYPTION_KEYS: no keyring configured", ErrKMS)
		}
		return plain, nil
	}
	return UnwrapKeyring(ctx, kmsURL, wrapped)
}

// UnwrapKeyring unwraps every `id:base64(wrapped)` entry of spec with the
// KMS key at kmsURL, once, within Timeout, and returns the keyring of the
// plain data keys in the same order (the first is the primary).
func UnwrapKeyring(ctx context.Context, kmsURL string, spec crypto.Secret) (*crypto.Keyring, error) {
	entries, err := parseEntries(spec.Reveal())
	if err != nil {
		return nil, err
	}
	plain, err := unwrapAll(ctx, kmsURL, entries)
	if err != nil {
		return nil, err
	}
	kr, err := crypto.ParseKeyring(joinEntries(plain).Reveal())
	if err != nil {
		// crypto's errors never hold key material.
		return nil, fmt.Errorf("%w: ENCRYPTION_KEYS: the unwrapped keys are not a valid keyring: %v", ErrKMS, err)
	}
	return kr, nil
}

// Wrap wraps every entry of plainSpec (`id:base64key,...`, the plain
// ENCRYPTION_KEYS format) with the KMS key at kmsURL and returns the
// entries ready for ENCRYPTION_KEYS under that KMS_KEY_URL, same ids, same
// order.
func Wrap(ctx context.Context, kmsURL string, plainSpec crypto.Secret) (crypto.Secret, error) {
	if _, err := crypto.ParseKeyring(plainSpec.Reveal()); err != nil {
		return "", fmt.Errorf("%w: ENCRYPTION_KEYS: %v", ErrKMS, err)
	}
	entries, err := parseEntries(plainSpec.Reveal())
	if err != nil {
		return "", err
	}
	wrapped, err := wrapAll(ctx, kmsURL, entries)
	if err != nil {
		return "", err
	}
	return joinEntries(wrapped), nil
}

// Generate returns a new data key with the given id, wrapped by the KMS key
// at kmsURL: one entry ready to be put first in ENCRYPTION_KEYS.
func Generate(ctx context.Context, kmsURL, id string) (crypto.Secret, error) {
	entry, err := crypto.GenerateKey(id)
	if err != nil {
		return "", err
	}
	return Wrap(ctx, kmsURL, crypto.Secret(entry))
}

// Rewrap unwraps every entry of spec with the KMS key at fromURL and wraps
// it again with the one at toURL, for a KMS key rotation: the data keys do
// not change, so no stored row is re-encrypted. An empty fromURL means spec
// holds plain keys (moving to a KMS for the first time). The result is
// checked by unwrapping it under toURL before it is returned.
func Rewrap(ctx context.Context, fromURL, toURL string, spec crypto.Secret) (crypto.Secret, error) {
	if toURL == "" {
		return "", fmt.Errorf("%w: no KMS key to wrap with", ErrKMS)
	}
	var plain crypto.Secret
	if fromURL == "" {
		if _, err := crypto.ParseKeyring(spec.Reveal()); err != nil {
			return "", fmt.Errorf("%w: ENCRYPTION_KEYS: %v", ErrKMS, err)
		}
		plain = spec
	} else {
		entries, err := parseEntries(spec.Reveal())
		if err != nil {
			return "", err
		}
		keys, err := unwrapAll(ctx, fromURL, entries)
		if err != nil {
			return "", err
		}
		plain = joinEntries(keys)
		if _, err := crypto.ParseKeyring(plain.Reveal()); err != nil {
			return "", fmt.Errorf("%w: ENCRYPTION_KEYS: the unwrapped keys are not a valid keyring: %v", ErrKMS, err)
		}
	}
	out, err := Wrap(ctx, toURL, plain)
	if err != nil {
		return "", err
	}
	check, err := UnwrapKeyring(ctx, toURL, out)
	if err != nil {
		return "", fmt.Errorf("%w: the re-wrapped keys do not unwrap under the new KMS key: %v", ErrKMS, err)
	}
	if want, err := crypto.ParseKeyring(plain.Reveal()); err != nil || !slices.Equal(check.IDs(), want.IDs()) {
		return "", fmt.Errorf("%w: the re-wrapped keys do not match the old ones", ErrKMS)
	}
	return out, nil
}

// entry is one `id:base64` item; value is the decoded key or wrapped key.
type entry struct {
	id    string
	value []byte
}

// parseEntries splits spec into entries. Ids are checked by
// crypto.ParseKeyring later; here an entry is named by position only, so a
// malformed entry is never echoed.
func parseEntries(spec string) ([]entry, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, fmt.Errorf("%w: ENCRYPTION_KEYS: no keys given", ErrKMS)
	}
	var out []entry
	var problems []string
	for i, s := range strings.Split(spec, ",") {
		s = strings.TrimSpace(s)
		sep := strings.LastIndexByte(s, ':')
		if sep <= 0 || sep == len(s)-1 {
			problems = append(problems, fmt.Sprintf("entry %d: want id:base64(wrapped key)", i+1))
			continue
		}
		enc := base64.StdEncoding
		if !strings.HasSuffix(s, "=") {
			enc = base64.RawStdEncoding
		}
		b, err := enc.DecodeString(s[sep+1:])
		if err != nil {
			problems = append(problems, fmt.Sprintf("entry %d: the wrapped key is not valid standard base64", i+1))
			continue
		}
		out = append(out, entry{id: s[:sep], value: b})
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: ENCRYPTION_KEYS: %s", ErrKMS, strings.Join(problems, "; "))
	}
	return out, nil
}

func joinEntries(es []entry) crypto.Secret {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.id + ":" + base64.StdEncoding.EncodeToString(e.value)
	}
	return crypto.Secret(strings.Join(parts, ","))
}

func unwrapAll(ctx context.Context, kmsURL string, entries []entry) ([]entry, error) {
	return withKeeper(ctx, kmsURL, "unwrap", entries, func(ctx context.Context, k *secrets.Keeper, value []byte) ([]byte, error) {
		return k.Decrypt(ctx, value)
	})
}

func wrapAll(ctx context.Context, kmsURL string, entries []entry) ([]entry, error) {
	return withKeeper(ctx, kmsURL, "wrap", entries, func(ctx context.Context, k *secrets.Keeper, value []byte) ([]byte, error) {
		return k.Encrypt(ctx, value)
	})
}

// timeout is Timeout; tests shorten it.
var timeout = Timeout

// withKeeper opens the KMS key and applies op to every entry, all within
// timeout. The work runs in its own goroutine because some drivers
// (hashivault) ignore the context: a KMS that never answers still fails
// the caller in time, and the abandoned call ends with the process.
func withKeeper(ctx context.Context, kmsURL, verb string, entries []entry, op func(context.Context, *secrets.Keeper, []byte) ([]byte, error)) ([]entry, error) {
	u, err := checkURL(kmsURL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		out []entry
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := applyAll(ctx, u, verb, entries, op)
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, scrubbed(r.err, kmsURL, entries, r.out)
		}
		return r.out, nil
	case <-ctx.Done():
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("%w: KMS_KEY_URL: stopped before the %s KMS answered: %w", ErrKMS, u.Scheme, ctx.Err())
		}
		return nil, fmt.Errorf("%w: KMS_KEY_URL: no answer from the %s KMS within %s (opening the key and %sping %d data keys): %w",
			ErrKMS, u.Scheme, timeout, verb, len(entries), ctx.Err())
	}
}

func applyAll(ctx context.Context, u *url.URL, verb string, entries []entry, op func(context.Context, *secrets.Keeper, []byte) ([]byte, error)) ([]entry, error) {
	k, err := secrets.DefaultURLMux().OpenKeeperURL(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("%w: KMS_KEY_URL: cannot open the %s KMS key: %w", ErrKMS, u.Scheme, err)
	}
	defer k.Close()
	out := make([]entry, 0, len(entries))
	for i, e := range entries {
		v, err := op(ctx, k, e.value)
		if err != nil {
			return out, fmt.Errorf("%w: KMS_KEY_URL: cannot %s entry %d of ENCRYPTION_KEYS with the %s KMS key (unreachable, not allowed, or not the key they were wrapped with): %w",
				ErrKMS, verb, i+1, u.Scheme, err)
		}
		out = append(out, entry{id: e.id, value: v})
	}
	return out, nil
}

// checkURL accepts only the documented schemes, and refuses a base64key://
// without a key, which gocloud would fill with a random key that is gone
// at the next start.
func checkURL(kmsURL string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(kmsURL))
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("%w: KMS_KEY_URL: not a URL; want one of %s", ErrKMS, schemeList())
	}
	if !slices.Contains(Schemes, u.Scheme) {
		return nil, fmt.Errorf("%w: KMS_KEY_URL: scheme %q is not supported; want one of %s", ErrKMS, u.Scheme, schemeList())
	}
	if u.Scheme == "base64key" && u.Host == "" {
		return nil, fmt.Errorf("%w: KMS_KEY_URL: base64key:// needs a key: base64key://<URL-safe base64 of 32 bytes>", ErrKMS)
	}
	return u, nil
}

func schemeList() string {
	parts := make([]string, len(Schemes))
	for i, s := range Schemes {
		parts[i] = s + "://"
	}
	return strings.Join(parts, ", ")
}

// scrubbed returns err with its cause's text cleaned of the KMS URL and of
// every key and wrapped key involved: a driver's message may quote the URL
// (the whole key for base64key://) or, in principle, what it was sent.
func scrubbed(err error, kmsURL string, groups ...[]entry) error {
	msg := err.Error()
	var secretsIn []string
	add := func(s string) {
		if len(s) >= 6 {
			secretsIn = append(secretsIn, s)
		}
	}
	add(kmsURL)
	if u, perr := url.Parse(kmsURL); perr == nil {
		add(u.String())
		add(u.Host)
		add(strings.TrimPrefix(u.String(), u.Scheme+"://"))
	}
	if i := strings.Index(kmsURL, "://"); i >= 0 {
		add(kmsURL[i+3:])
	}
	for _, g := range groups {
		for _, e := range g {
			add(string(e.value))
			add(base64.StdEncoding.EncodeToString(e.value))
			add(base64.RawStdEncoding.EncodeToString(e.value))
		}
	}
	// Longest first, so a part never leaves the rest of a longer secret.
	slices.SortFunc(secretsIn, func(a, b string) int { return len(b) - len(a) })
	for _, s := range secretsIn {
		msg = strings.ReplaceAll(msg, s, "[REDACTED]")
	}
	return &scrubbedError{msg: msg}
}

// scrubbedError prints the cleaned message. It unwraps to ErrKMS only, not
// to the cause, so that nothing walking the chain finds the raw text.
type scrubbedError struct{ msg string }

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return ErrKMS }
