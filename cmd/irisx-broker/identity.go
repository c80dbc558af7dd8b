package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/irisx-broker/irisx-broker/identity"
	"github.com/irisx-broker/irisx-broker/internal/outbound"
)

// defaultJWKSURL is the contract's TRACKUNIT_JWKS_URL default.
const defaultJWKSURL = "https://iris.trackunit.com/api/marketplace/jwks"

// maxTokenFile bounds --token: a token over 8 KiB is refused anyway.
const maxTokenFile = 64 << 10

const identityUsage = `usage: irisx-broker identity check [--jwks URL] [--token FILE] [--at TIME]

Fetches the JWKS (default TRACKUNIT_JWKS_URL) as the service does (5 s
time-out, 1 MiB cap, no redirects) and says, per key, whether the broker
uses it or skips it and why; exits 1 when no key is usable.

--token FILE verifies a captured Trackunit-Identity token (a "Bearer "
prefix is fine) against that JWKS and IDENTITY_ISSUER, IDENTITY_AUDIENCE,
IDENTITY_LEEWAY and IDENTITY_MAX_AGE from the environment, and prints the
verdict with the token's profile; exits 1 when it is refused. --at TIME
(RFC 3339 or Unix seconds) judges it as of that time instead of now, for a
token captured earlier.
`

func runIdentity(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprint(stderr, identityUsage)
		return errReported
	}
	fs := flag.NewFlagSet("identity check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, identityUsage) }
	jwksURL := fs.String("jwks", lookupOr(lookup, "TRACKUNIT_JWKS_URL", defaultJWKSURL), "JWKS URL")
	tokenFile := fs.String("token", "", "file holding a captured identity token")
	atFlag := fs.String("at", "", "judge the token as of this time (RFC 3339 or Unix seconds)")
	if err := fs.Parse(args[1:]); err != nil {
		return errReported
	}
	cfg, err := identityCheckConfig(lookup)
	if err != nil {
		return err
	}
	cfg.JWKSURL = *jwksURL
	now := time.Now
	if *atFlag != "" {
		at, err := parseAt(*atFlag)
		if err != nil {
			return err
		}
		now = func() time.Time { return at }
	}
	cfg.Now = now
	cfg.HTTPClient = outbound.New(outbound.Options{Timeout: identity.DefaultFetchTimeout})
	v, err := identity.New(cfg)
	if err != nil {
		return err
	}

	reports, fetchErr := v.FetchKeys(ctx)
	var noUsable *identity.NoUsableKeyError
	if fetchErr != nil && !errors.As(fetchErr, &noUsable) {
		return fmt.Errorf("fetching the JWKS from %s: %w", identity.Sanitize(cfg.JWKSURL, 200), fetchErr)
	}
	printKeyReports(stdout, cfg.JWKSURL, reports)
	if fetchErr != nil {
		return errors.New("the JWKS has no key the broker would use")
	}
	if *tokenFile == "" {
		return nil
	}
	token, err := readTokenFile(*tokenFile)
	if err != nil {
		return err
	}
	_, p, verr := v.Check(ctx, token)
	printVerdict(stdout, cfg, p, now())
	if verr != nil {
		return errors.New("the token is refused: " + p.Rule)
	}
	return nil
}

// identityCheckConfig reads the four identity variables only, with the
// bounds serve applies, so a check needs none of serve's other settings.
func identityCheckConfig(lookup env) (identity.Config, error) {
	cfg := identity.Config{
		Issuer:   strings.TrimSpace(lookupOr(lookup, "IDENTITY_ISSUER", "")),
		Audience: strings.TrimSpace(lookupOr(lookup, "IDENTITY_AUDIENCE", "")),
	}
	var errs []error
	dur := func(name, def string, lo, hi time.Duration) time.Duration {
		s := lookupOr(lookup, name, def)
		d, err := time.ParseDuration(s)
		if err != nil || d < lo || d > hi {
			errs = append(errs, fmt.Errorf("%s must be a duration from %s to %s", name, lo, hi))
		}
		return d
	}
	cfg.Leeway = dur("IDENTITY_LEEWAY", "60s", 0, 5*time.Minute)
	cfg.MaxAge = dur("IDENTITY_MAX_AGE", "10m", time.Second, 24*time.Hour)
	return cfg, errors.Join(errs...)
}

func parseAt(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errors.New("--at must be RFC 3339 or Unix seconds")
	}
	return t, nil
}

func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("--token: %w", err)
	}
	if len(b) > maxTokenFile {
		return "", fmt.Errorf("--token: the file is larger than %d bytes", maxTokenFile)
	}
	return strings.TrimSpace(string(b)), nil
}

func printKeyReports(w io.Writer, url string, reports []identity.KeyReport) {
	usable := 0
	for _, r := range reports {
		if r.Usable {
			usable++
		}
	}
	fmt.Fprintf(w, "JWKS %s: %d keys, %d usable\n\n", identity.Sanitize(url, 200), len(reports), usable)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tKTY\tALG\tUSE\tSIZE\tBROKER")
	for _, r := range reports {
		verdict := "use"
		if !r.Usable {
			verdict = "skip: " + r.Skip
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", dash(r.Kid), dash(r.Kty), dash(r.Alg), dash(r.Use), r.Size(), verdict)
	}
	_ = tw.Flush()
}

func printVerdict(w io.Writer, cfg identity.Config, p identity.Profile, at time.Time) {
	fmt.Fprintf(w, "\nToken judged at %s with IDENTITY_ISSUER=%q IDENTITY_AUDIENCE=%q IDENTITY_LEEWAY=%s IDENTITY_MAX_AGE=%s\n",
		at.UTC().Format(time.RFC3339), cfg.Issuer, cfg.Audience, cfg.Leeway, cfg.MaxAge)
	verdict := p.Verdict
	if p.Rule != "" {
		verdict += " (rule: " + p.Rule + ")"
	}
	fmt.Fprintf(w, "verdict:  %s\n", verdict)
	if !p.Decoded {
		fmt.Fprintln(w, "profile:  (the token did not decode)")
		return
	}
	fmt.Fprintf(w, "alg:      %s\nkid:      %s\ntyp:      %s\n", dash(p.Alg), dash(p.Kid), dash(p.Typ))
	fmt.Fprintf(w, "iss:      %s\naud:      [%s]\n", dash(p.Iss), strings.Join(p.Aud, " "))
	fmt.Fprintf(w, "claims:   [%s] (%d)\n", strings.Join(p.Claims, " "), p.ClaimCount)
	if p.HasAge {
		fmt.Fprintf(w, "age:      %s\n", p.Age)
	}
	if p.HasLifetime {
		fmt.Fprintf(w, "lifetime: %s\n", p.Lifetime)
	}
	fmt.Fprintf(w, "shape:    %s\n", p.Shape())
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
