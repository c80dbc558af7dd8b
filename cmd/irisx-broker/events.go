package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/irisx-broker/irisx-broker/client"
)

// runEvents is `events watch|list`: the EventService through the Go
// client, one JSON event per line.
func runEvents(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "watch" && args[0] != "list") {
		fmt.Fprintln(stderr, "usage: irisx-broker events watch|list [--server URL] [--after ID] (env IRISX_TOKEN)")
		return errReported
	}
	fs := flag.NewFlagSet("events "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", lookupOr(lookup, "IRISX_BROKER_SERVER", "http://127.0.0.1:8081"), "the service's internal listener")
	after := fs.String("after", "", "start after this event id (empty: from the oldest retained event)")
	if err := fs.Parse(args[1:]); err != nil {
		return errReported
	}
	tok, ok := lookup("IRISX_TOKEN")
	if !ok || tok == "" {
		return errors.New("IRISX_TOKEN: required (a token from INTERNAL_API_TOKENS or ADMIN_API_TOKENS)")
	}
	ev := client.NewEvents(*server, tok)
	enc := json.NewEncoder(stdout)
	if args[0] == "list" {
		for {
			page, next, err := ev.List(ctx, *after, 1000)
			if err != nil {
				return err
			}
			for _, e := range page {
				if err := enc.Encode(e); err != nil {
					return err
				}
			}
			if len(page) == 0 {
				return nil
			}
			*after = next
		}
	}
	err := ev.WatchEvents(ctx, *after, func(e client.Event) error { return enc.Encode(e) })
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
