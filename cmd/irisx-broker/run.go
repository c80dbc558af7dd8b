package main

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// env looks a variable up, as os.LookupEnv does; tests pass their own.
type env func(string) (string, bool)

// errReported is returned when the error was already written to stderr.
var errReported = errors.New("reported")

const usage = `usage: irisx-broker <command> [flags]

commands:
  serve                 run the service (applies pending migrations unless --migrate=false)
  dev                   serve with an in-process Trackunit simulator and a throwaway key
  migrate up|down N|version
  keys generate [--id ID] [--kms URL]
  keys rewrap [--from URL] --to URL   re-wrap ENCRYPTION_KEYS for a KMS key rotation
  keys reencrypt [--batch N]
  installs list [--app ID] [--status S] [--json]
  api-users add|list|delete   register Trackunit API users (api-users help for flags)
  identity check [--jwks URL] [--token FILE]   the JWKS's keys; a captured token's verdict
  healthcheck [--url URL]     exit 0 when /readyz answers 200 (the image's HEALTHCHECK)
  version               the module version and VCS revision
  api-keys add|list|delete    register Trackunit API keys (api-keys help for flags)
  events watch|list [--after ID]   install lifecycle events (env IRISX_TOKEN: an internal or admin token)
`

// run is the whole program, with its inputs and outputs injected so tests
// can drive it.
func run(ctx context.Context, args []string, lookup env, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return errReported
	}
	cmd, rest := args[1], args[2:]
	var err error
	switch cmd {
	case "serve":
		err = runServe(ctx, rest, lookup, stdout, stderr)
	case "dev":
		err = runDev(ctx, rest, lookup, stdout, stderr)
	case "migrate":
		err = runMigrate(ctx, rest, lookup, stdout, stderr)
	case "keys":
		err = runKeys(ctx, rest, lookup, stdout, stderr)
	case "installs":
		err = runInstalls(ctx, rest, lookup, stdout)
	case "api-users":
		err = runAPIUsers(ctx, rest, lookup, stdin, stdout)
	case "identity":
		err = runIdentity(ctx, rest, lookup, stdout, stderr)
	case "healthcheck":
		err = runHealthcheck(ctx, rest, lookup, stdout, stderr)
	case "version", "--version":
		err = runVersion(stdout)
	case "api-keys":
		err = runAPIKeys(ctx, rest, lookup, stdin, stdout)
	case "events":
		err = runEvents(ctx, rest, lookup, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
		return errReported
	}
	if err != nil && !errors.Is(err, errReported) {
		fmt.Fprintf(stderr, "irisx-broker %s: %v\n", cmd, err)
	}
	return err
}
