// Command irisx-bench runs the broker's benchmarks (`make bench`): every
// figure of the performance brief against a baseline measured in the same
// run, printed as a table and written to docs/BENCHMARKS.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		os.Exit(1)
	}
}
