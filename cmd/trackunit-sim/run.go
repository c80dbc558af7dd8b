package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/irisx-broker/irisx-broker/crypto"
)

const usage = `usage: trackunit-sim <command> [flags]

commands:
  serve   run the simulator: JWKS, /apptoken, /token and the /sim control API
            [--addr 127.0.0.1:8090] [--keys FILE] [--issuer S] [--audience S]
            [--refresh-grace D] [--token-ttl D] [--webhook-secret-file F]
  send    sign and send an install callback
            --to URL --app ID --account UUID [--type INSTALLED] [--client-id X]
            [--client-secret-file F] (--sim URL | --keys FILE)
  fault   inject a fault into a running simulator
            --sim URL [--endpoint apptoken|token|jwks] [--status N] [--retry-after S]
            [--times N] [--latency D] [--html] [--error-code C] [--okta] [--hang] | --clear
  rotate  make a new signing key              --sim URL [--kind RS256|PS256|ES256|ES384|EdDSA|...]
  revoke  make /apptoken refuse a client      --sim URL --client-id X
  user    register a /token API user          --sim URL --username U --client-id X
                                              --password-file F --client-secret-file F
  stats   print the simulator's counters      --sim URL

Secrets are read from files or generated, never taken as flag values.
--sim defaults to $TRACKUNIT_SIM_URL, else http://127.0.0.1:8090 (serve's default address).
`

// errUsage marks a command-line mistake; the usage has been printed.
var errUsage = errors.New("invalid command line")

// run is the whole program, with its environment injected for tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmds := map[string]func(context.Context, []string, env) error{
		"serve":  serve,
		"send":   send,
		"fault":  fault,
		"rotate": rotate,
		"revoke": revoke,
		"user":   user,
		"stats":  stats,
	}
	name := args[1]
	if name == "help" || name == "-h" || name == "--help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", name, usage)
		return errUsage
	}
	err := cmd(ctx, args[2:], env{getenv: getenv, stdout: stdout, stderr: stderr})
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// env is what every subcommand gets besides its arguments.
type env struct {
	getenv         func(string) string
	stdout, stderr io.Writer
}

// flags returns a flag set for a subcommand that reports errors instead of
// exiting.
func (e env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("trackunit-sim "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// parse parses args and refuses positional leftovers.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return errUsage
	}
	return nil
}

// required reports the first empty value among name=value pairs.
func required(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			return fmt.Errorf("%s is required", pairs[i])
		}
	}
	return nil
}

// readSecretFile reads a secret from a file, without surrounding whitespace.
func readSecretFile(path string) (crypto.Secret, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	v := strings.TrimSpace(string(raw))
	if v == "" {
		return "", fmt.Errorf("secret file %s is empty", path)
	}
	return crypto.Secret(v), nil
}
