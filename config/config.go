// Package config owns the service's configuration: one struct loaded from
// the environment through an injectable lookup function and validated in one
// place, so a bad deployment is told about every bad variable at once.
package config

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/irisx-broker/irisx-broker/crypto"
)

// raw is the environment as envconfig reads it: every field a string, so
// that decoding itself cannot fail and validation can report all problems
// together instead of stopping at the first.
type raw struct {
	// Storage is exported only so envconfig can fill it.
	Storage            rawStorage
	PublicAddr         string        `env:"PUBLIC_ADDR, default=:8080"`
	InternalAddr       string        `env:"INTERNAL_ADDR, default=127.0.0.1:8081"`
	InternalAPITokens  crypto.Secret `env:"INTERNAL_API_TOKENS"`
	InternalTokensFile string        `env:"INTERNAL_API_TOKENS_FILE"`
	AdminAPITokens     crypto.Secret `env:"ADMIN_API_TOKENS"`
	AdminTokensFile    string        `env:"ADMIN_API_TOKENS_FILE"`
	JWKSURL            string        `env:"TRACKUNIT_JWKS_URL, default=https://iris.trackunit.com/api/marketplace/jwks"`
	AuthURL            string        `env:"TRACKUNIT_AUTH_URL, default=https://auth.trackunit.com"`
	IdentityIssuer     string        `env:"IDENTITY_ISSUER"`
	IdentityAudience   string        `env:"IDENTITY_AUDIENCE"`
	IdentityLeeway     string        `env:"IDENTITY_LEEWAY, default=60s"`
	IdentityMaxAge     string        `env:"IDENTITY_MAX_AGE, default=10m"`
	AllowedAppIDs      string        `env:"ALLOWED_APP_IDS"`
	DefaultScopes      string        `env:"DEFAULT_SCOPES"`
	TokenRefreshMargin string        `env:"TOKEN_REFRESH_MARGIN, default=5m"`
	LogLevel           string        `env:"LOG_LEVEL, default=info"`
	LogFormat          string        `env:"LOG_FORMAT, default=json"`
	ShutdownDrain      string        `env:"SHUTDOWN_DRAIN, default=5s"`
	IrisAPIURL         string        `env:"IRIS_API_URL, default=https://iris.trackunit.com"`
	EventWebhookURL    string        `env:"EVENT_WEBHOOK_URL"`
	EventWebhookSecret crypto.Secret `env:"EVENT_WEBHOOK_SECRET"`
	WebhookSecretFile  string        `env:"EVENT_WEBHOOK_SECRET_FILE"`
	EventRetention     string        `env:"EVENT_RETENTION, default=168h"`
}

// Config is the validated configuration of `irisx-broker serve`.
type Config struct {
	DatabaseURL        crypto.Secret
	PublicAddr         string
	InternalAddr       string
	Keyring            *crypto.Keyring
	InternalAPITokens  []crypto.Secret
	AdminAPITokens     []crypto.Secret
	JWKSURL            string
	AuthURL            string
	IdentityIssuer     string
	IdentityAudience   string
	IdentityLeeway     time.Duration
	IdentityMaxAge     time.Duration
	AllowedAppIDs      []string
	DefaultScopes      []string
	TokenRefreshMargin time.Duration
	LogLevel           slog.Level
	LogFormat          string
	// DatabaseDirectURL is an unpooled connection for LISTEN and
	// migrations; it defaults to DatabaseURL.
	DatabaseDirectURL crypto.Secret
	// KMSKeyURL, when set, wraps every key of ENCRYPTION_KEYS: Keyring is
	// then nil and WrappedKeys holds the entries, for
	// kms.ResolveKeyring to unwrap.
	KMSKeyURL          string
	WrappedKeys        crypto.Secret
	ShutdownDrain      time.Duration
	IrisAPIURL         string
	EventWebhookURL    string
	EventWebhookSecret crypto.Secret
	EventRetention     time.Duration
	// Warnings are problems that do not stop the start, to be logged;
	// like errors, they name variables, never values.
	Warnings []string
}

// Error lists every bad variable found by Load. Its message names variables
// and what is wrong with them, never their values.
type Error struct {
	Problems []string
}

func (e *Error) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

// Load reads the configuration through lookup (os.LookupEnv in production)
// and validates all of it. readFile reads the *_FILE variables (each secret
// variable may be given as NAME_FILE instead); nil means os.ReadFile.
func Load(ctx context.Context, lookup func(string) (string, bool), readFile func(string) ([]byte, error)) (*Config, error) {
	var r raw
	if err := readEnv(ctx, lookup, &r); err != nil {
		return nil, err
	}
	if readFile == nil {
		readFile = os.ReadFile
	}
	v := validator{readFile: readFile}
	st := v.storage(r.Storage)
	internalTokens, internalSet := v.secret("INTERNAL_API_TOKENS", r.InternalAPITokens, r.InternalTokensFile)
	adminTokens, adminSet := v.secret("ADMIN_API_TOKENS", r.AdminAPITokens, r.AdminTokensFile)
	webhookSecret, _ := v.secret("EVENT_WEBHOOK_SECRET", r.EventWebhookSecret, r.WebhookSecretFile)
	c := &Config{
		DatabaseURL:        st.DatabaseURL,
		Keyring:            st.Keyring,
		PublicAddr:         v.addr("PUBLIC_ADDR", r.PublicAddr),
		InternalAddr:       v.internalAddr(r.InternalAddr),
		InternalAPITokens:  v.tokens("INTERNAL_API_TOKENS", internalTokens, internalSet),
		AdminAPITokens:     v.tokens("ADMIN_API_TOKENS", adminTokens, adminSet),
		JWKSURL:            v.httpURL("TRACKUNIT_JWKS_URL", r.JWKSURL),
		AuthURL:            strings.TrimRight(v.httpURL("TRACKUNIT_AUTH_URL", r.AuthURL), "/"),
		IdentityIssuer:     strings.TrimSpace(r.IdentityIssuer),
		IdentityAudience:   strings.TrimSpace(r.IdentityAudience),
		IdentityLeeway:     v.durationAtMost("IDENTITY_LEEWAY", r.IdentityLeeway, 0, maxIdentityLeeway),
		IdentityMaxAge:     v.durationAtMost("IDENTITY_MAX_AGE", r.IdentityMaxAge, time.Second, maxIdentityMaxAge),
		AllowedAppIDs:      splitList(r.AllowedAppIDs, ","),
		DefaultScopes:      splitList(r.DefaultScopes, " "),
		TokenRefreshMargin: v.duration("TOKEN_REFRESH_MARGIN", r.TokenRefreshMargin, 0),
		LogFormat:          strings.ToLower(strings.TrimSpace(r.LogFormat)),
		DatabaseDirectURL:  st.DatabaseDirectURL,
		KMSKeyURL:          st.KMSKeyURL,
		WrappedKeys:        st.WrappedKeys,
		ShutdownDrain:      v.duration("SHUTDOWN_DRAIN", r.ShutdownDrain, 0),
		IrisAPIURL:         strings.TrimRight(v.httpURL("IRIS_API_URL", r.IrisAPIURL), "/"),
		EventRetention:     v.duration("EVENT_RETENTION", r.EventRetention, time.Minute),
	}
	c.EventWebhookURL, c.EventWebhookSecret = v.webhook(r.EventWebhookURL, webhookSecret)
	v.disjointTokens(c.InternalAPITokens, c.AdminAPITokens)
	if err := c.LogLevel.UnmarshalText([]byte(r.LogLevel)); err != nil {
		v.bad("LOG_LEVEL", "must be debug, info, warn or error")
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		v.bad("LOG_FORMAT", "must be json or text")
	}
	if len(v.problems) > 0 {
		return nil, &Error{Problems: v.problems}
	}
	c.Warnings = v.warnings
	return c, nil
}

// Storage is what a command that only reads and writes stored secrets
// needs (`keys reencrypt`): the database and the keyring, no API tokens.
type Storage struct {
	DatabaseURL crypto.Secret
	// DatabaseDirectURL is DATABASE_DIRECT_URL, else DatabaseURL.
	DatabaseDirectURL crypto.Secret
	KMSKeyURL         string
	// Keyring is nil when KMSKeyURL is set; WrappedKeys then holds the
	// entries of ENCRYPTION_KEYS, for kms.ResolveKeyring to unwrap.
	Keyring     *crypto.Keyring
	WrappedKeys crypto.Secret
}

// rawStorage is the part of raw that LoadStorage reads.
type rawStorage struct {
	DatabaseURL        crypto.Secret `env:"DATABASE_URL"`
	DatabaseURLFile    string        `env:"DATABASE_URL_FILE"`
	EncryptionKeys     crypto.Secret `env:"ENCRYPTION_KEYS"`
	EncryptionKeysFile string        `env:"ENCRYPTION_KEYS_FILE"`
	DatabaseDirectURL  crypto.Secret `env:"DATABASE_DIRECT_URL"`
	DirectURLFile      string        `env:"DATABASE_DIRECT_URL_FILE"`
	KMSKeyURL          string        `env:"KMS_KEY_URL"`
}

// LoadStorage reads and validates DATABASE_URL and ENCRYPTION_KEYS (or
// ENCRYPTION_KEYS_FILE) only, by the same rules and with the same messages
// as Load, reporting every bad variable at once as an *Error. readFile
// reads the *_FILE variables; nil means os.ReadFile.
func LoadStorage(ctx context.Context, lookup func(string) (string, bool), readFile func(string) ([]byte, error)) (*Storage, error) {
	var r rawStorage
	if err := readEnv(ctx, lookup, &r); err != nil {
		return nil, err
	}
	if readFile == nil {
		readFile = os.ReadFile
	}
	v := validator{readFile: readFile}
	s := v.storage(r)
	if len(v.problems) > 0 {
		return nil, &Error{Problems: v.problems}
	}
	return s, nil
}

// readEnv fills target (a raw struct of strings) through lookup.
func readEnv(ctx context.Context, lookup func(string) (string, bool), target any) error {
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{
		Target:   target,
		Lookuper: envconfig.LookuperFunc(lookup),
	}); err != nil {
		return fmt.Errorf("reading environment: %w", err)
	}
	return nil
}

// storage validates the database URLs and the keyring.
func (v *validator) storage(r rawStorage) *Storage {
	dbURL, ok := v.secret("DATABASE_URL", r.DatabaseURL, r.DatabaseURLFile)
	if ok {
		v.databaseURL("DATABASE_URL", dbURL, true)
	}
	direct, ok := v.secret("DATABASE_DIRECT_URL", r.DatabaseDirectURL, r.DirectURLFile)
	if direct.IsZero() {
		direct = dbURL
	} else if ok {
		v.databaseURL("DATABASE_DIRECT_URL", direct, false)
	}
	s := &Storage{
		DatabaseURL:       dbURL,
		DatabaseDirectURL: direct,
		KMSKeyURL:         strings.TrimSpace(r.KMSKeyURL),
	}
	if s.KMSKeyURL == "" {
		s.Keyring = v.keyring(r.EncryptionKeys, r.EncryptionKeysFile)
		return s
	}
	// Wrapped keys are unwrapped by the caller (internal/kms), which does
	// the KMS I/O; here only the shape of the URL is checked, without
	// echoing it (a base64key:// URL is a key).
	if u, err := url.Parse(s.KMSKeyURL); err != nil || u.Scheme == "" {
		v.bad("KMS_KEY_URL", "must be a KMS key URL such as awskms://, gcpkms://, azurekeyvault://, hashivault:// or base64key://")
	}
	spec, _ := v.keySpec(r.EncryptionKeys, r.EncryptionKeysFile)
	s.WrappedKeys = crypto.Secret(spec)
	return s
}

// secret resolves a secret variable given either as NAME or as NAME_FILE
// (the path of a file holding it, surrounding white space trimmed). ok is
// false when the variable is already reported (both set, file unreadable).
func (v *validator) secret(name string, value crypto.Secret, file string) (_ crypto.Secret, ok bool) {
	file = strings.TrimSpace(file)
	switch {
	case file == "":
		return value, true
	case !value.IsZero():
		v.bad(name, fmt.Sprintf("set either %s or %s_FILE, not both", name, name))
		return "", false
	}
	b, err := v.readFile(file)
	if err != nil {
		v.bad(name+"_FILE", readError(err))
		return "", false
	}
	return crypto.Secret(strings.TrimSpace(string(b))), true
}

// readError says why a file cannot be read without quoting its contents.
func readError(err error) string {
	why := "cannot be read"
	var pe *fs.PathError
	if errors.As(err, &pe) {
		why += ": " + pe.Err.Error()
	}
	return why
}

// Bounds of the identity checks: beyond them a JWT would be honoured long
// after it should not be, so a typo is refused rather than obeyed.
const (
	maxIdentityLeeway = 5 * time.Minute
	maxIdentityMaxAge = 24 * time.Hour
)

// minTokenLength is the shortest bearer token accepted without a warning.
const minTokenLength = 16

type validator struct {
	problems, warnings []string
	readFile           func(string) ([]byte, error)
}

func (v *validator) bad(name, why string) {
	v.problems = append(v.problems, name+": "+why)
}

func (v *validator) addr(name, s string) string {
	if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
		v.bad(name, "must be host:port (host may be empty), e.g. :8080")
	}
	return s
}

// internalAddr is addr, warning when the internal listener is not bound to
// a loopback address: it serves tokens and the admin API.
func (v *validator) internalAddr(s string) string {
	v.addr("INTERNAL_ADDR", s)
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return s
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		v.warnings = append(v.warnings, "INTERNAL_ADDR: not a loopback address, so the internal API (tokens, admin, metrics) is exposed to the network; "+
			"make sure only trusted callers can reach it")
	}
	return s
}

func (v *validator) httpURL(name, s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.bad(name, "must be an absolute http(s) URL")
	}
	return s
}

func (v *validator) duration(name, s string, minimum time.Duration) time.Duration {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		v.bad(name, "must be a duration such as 60s or 5m")
		return 0
	}
	if d < minimum {
		v.bad(name, fmt.Sprintf("must be at least %s", minimum))
	}
	return d
}

func (v *validator) durationAtMost(name, s string, minimum, maximum time.Duration) time.Duration {
	d := v.duration(name, s, minimum)
	if d > maximum {
		v.bad(name, fmt.Sprintf("must be at most %s", maximum))
	}
	return d
}

// disjointTokens refuses a token accepted by both token sets: an internal
// caller would hold admin rights, or an admin token mint tokens.
func (v *validator) disjointTokens(internal, admin []crypto.Secret) {
	for i, a := range internal {
		for j, b := range admin {
			if subtle.ConstantTimeCompare([]byte(a.Reveal()), []byte(b.Reveal())) == 1 {
				v.bad("ADMIN_API_TOKENS", fmt.Sprintf("token %d is also INTERNAL_API_TOKENS token %d; each token belongs to one set", j+1, i+1))
			}
		}
	}
}

func (v *validator) tokens(name string, s crypto.Secret, reported bool) []crypto.Secret {
	parts := splitList(s.Reveal(), ",")
	if len(parts) == 0 {
		if !reported {
			return nil
		}
		v.bad(name, "required: comma-separated bearer tokens")
		return nil
	}
	out := make([]crypto.Secret, 0, len(parts))
	for i, p := range parts {
		// The contract sets no minimum, so a short token is accepted, but
		// the operator hears about it at every start.
		if len(p) < minTokenLength {
			v.warnings = append(v.warnings, fmt.Sprintf("%s: token %d is shorter than %d characters; use long random tokens", name, i+1, minTokenLength))
		}
		out = append(out, crypto.Secret(p))
	}
	return out
}

func (v *validator) databaseURL(name string, s crypto.Secret, required bool) {
	if s.IsZero() {
		if required {
			v.bad(name, "required")
		}
		return
	}
	u, err := url.Parse(s.Reveal())
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		// The URL may hold a password: say what is wrong, never echo it.
		v.bad(name, "must be a postgres:// or postgresql:// URL")
	}
}

// webhookSecretPrefix starts a Standard Webhooks secret.
const webhookSecretPrefix = "whsec_"

// webhook validates EVENT_WEBHOOK_URL and EVENT_WEBHOOK_SECRET together:
// the secret is required with the URL and is whsec_ + base64 of 24 to 64
// bytes.
func (v *validator) webhook(rawURL string, secret crypto.Secret) (string, crypto.Secret) {
	rawURL = strings.TrimSpace(rawURL)
	if rawURL == "" {
		if !secret.IsZero() {
			v.warnings = append(v.warnings, "EVENT_WEBHOOK_SECRET: set without EVENT_WEBHOOK_URL; no webhooks are sent")
		}
		return "", secret
	}
	v.httpURL("EVENT_WEBHOOK_URL", rawURL)
	s := strings.TrimSpace(secret.Reveal())
	if s == "" {
		v.bad("EVENT_WEBHOOK_SECRET", "required with EVENT_WEBHOOK_URL: whsec_ followed by base64 of 24 to 64 random bytes")
		return rawURL, secret
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, webhookSecretPrefix))
	if !strings.HasPrefix(s, webhookSecretPrefix) || err != nil || len(b) < 24 || len(b) > 64 {
		v.bad("EVENT_WEBHOOK_SECRET", "must be whsec_ followed by base64 of 24 to 64 random bytes")
	}
	return rawURL, crypto.Secret(s)
}

func (v *validator) keyring(keys crypto.Secret, file string) *crypto.Keyring {
	spec, ok := v.keySpec(keys, file)
	if !ok {
		return nil
	}
	kr, err := crypto.ParseKeyring(spec)
	if err != nil {
		name := "ENCRYPTION_KEYS"
		if file != "" {
			name = "ENCRYPTION_KEYS_FILE"
		}
		why := err.Error()
		if looksWrapped(spec) {
			why += "; a key longer than 32 bytes looks KMS-wrapped: is KMS_KEY_URL missing?"
		}
		v.bad(name, why)
		return nil
	}
	return kr
}

// looksWrapped reports whether an entry's key is longer than a plain
// 32-byte key in base64 (44 characters), as a KMS-wrapped key is.
func looksWrapped(spec string) bool {
	for _, e := range strings.Split(spec, ",") {
		e = strings.TrimSpace(e)
		if i := strings.LastIndexByte(e, ':'); i >= 0 && len(e)-i-1 > 44 {
			return true
		}
	}
	return false
}

// keySpec returns ENCRYPTION_KEYS, or the entries of ENCRYPTION_KEYS_FILE
// joined by commas; ok is false when a problem was reported.
func (v *validator) keySpec(keys crypto.Secret, file string) (string, bool) {
	spec := keys.Reveal()
	switch {
	case spec != "" && file != "":
		v.bad("ENCRYPTION_KEYS", "set either ENCRYPTION_KEYS or ENCRYPTION_KEYS_FILE, not both")
		return "", false
	case file != "":
		b, err := v.readFile(file)
		if err != nil {
			v.bad("ENCRYPTION_KEYS_FILE", readError(err))
			return "", false
		}
		// One entry a line or comma-separated, as the operator prefers.
		spec = strings.Join(splitList(strings.ReplaceAll(string(b), "\n", ","), ","), ",")
	case spec == "":
		v.bad("ENCRYPTION_KEYS", "required (or ENCRYPTION_KEYS_FILE): comma-separated keyid:base64(32 bytes)")
		return "", false
	}
	return spec, true
}

func splitList(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
