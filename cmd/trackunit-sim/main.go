// Command trackunit-sim is a local stand-in for Trackunit: it serves a JWKS,
// /apptoken and /token, signs and sends install callbacks, and injects faults.
// See package trackunitsim for the behaviour and `trackunit-sim help` for use.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "trackunit-sim:", err)
		os.Exit(1)
	}
}
