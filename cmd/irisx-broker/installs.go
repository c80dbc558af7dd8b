package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
)

// runInstalls talks to a running service's InstallService, so operators need
// only an admin token, never database access or the encryption keys.
func runInstalls(ctx context.Context, args []string, lookup env, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "list" {
		return errors.New("usage: installs list [--app ID] [--status S] [--json] [--server URL]")
	}
	fs := flag.NewFlagSet("installs list", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	app := fs.String("app", "", "only this irisAppId")
	status := fs.String("status", "", "only this status: installed, uninstalled, credentials_rejected")
	asJSON := fs.Bool("json", false, "one JSON object per install, for scripts")
	server := fs.String("server", lookupOr(lookup, "IRISX_BROKER_SERVER", "http://127.0.0.1:8081"), "the service's internal listener (env IRISX_BROKER_SERVER)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	tok, err := adminToken(lookup)
	if err != nil {
		return err
	}
	c := brokerv1connect.NewInstallServiceClient(adminHTTPClient(), *server)
	var tw *tabwriter.Writer
	if !*asJSON {
		tw = tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "IRIS APP ID\tACCOUNT ID\tSTATUS\tUPDATED\tLAST TOKEN\tLAST ERROR")
	}
	pageToken := ""
	for {
		req := withBearer(&brokerv1.ListInstallsRequest{IrisAppId: *app, Status: *status, PageSize: 1000, PageToken: pageToken}, tok)
		resp, err := c.ListInstalls(ctx, req)
		if err != nil {
			return fmt.Errorf("listing installs at %s: %w", *server, err)
		}
		for _, in := range resp.Msg.GetInstalls() {
			if *asJSON {
				b, err := protojson.Marshal(in)
				if err != nil {
					return err
				}
				fmt.Fprintln(stdout, string(json.RawMessage(b)))
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", escapeControl(in.GetIrisAppId()), escapeControl(in.GetAccountId()),
				escapeControl(in.GetStatus()), timeCell(in.GetUpdatedAt()), timeCell(in.GetLastTokenAt()), escapeControl(in.GetLastError()))
		}
		if pageToken = resp.Msg.GetNextPageToken(); pageToken == "" {
			break
		}
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// escapeControl shows control and other non-printing characters (a tab,
// an escape sequence, a bidi override) as Go escapes, so whatever is stored
// cannot rewrite the operator's terminal or shift the table's columns.
func escapeControl(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}
