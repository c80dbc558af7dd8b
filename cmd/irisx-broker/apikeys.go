package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
)

const apiKeysUsage = `usage:
  api-keys add --name NAME --client-id ID --scopes "a b" [--client-secret-file FILE]
  api-keys list [--json]
  api-keys delete --name NAME
every command also takes --server URL (env IRISX_BROKER_SERVER) and needs env IRISX_ADMIN_TOKEN.
add reads the client secret from its file, or else from the first line of standard input; it is
never an argument, which would show in the process list and the shell history.`

// runAPIKeys talks to a running service's ApiKeyService, as api-users does.
func runAPIKeys(ctx context.Context, args []string, lookup env, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("a command is required\n%s", apiKeysUsage)
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stdout, apiKeysUsage)
		return nil
	}
	fs := flag.NewFlagSet("api-keys "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server := fs.String("server", lookupOr(lookup, "IRISX_BROKER_SERVER", "http://127.0.0.1:8081"), "the service's internal listener")
	name := fs.String("name", "", "the name the API key is registered under")
	var run func(brokerv1connect.ApiKeyServiceClient, string) error
	switch args[0] {
	case "add":
		clientID := fs.String("client-id", "", "the API key's OAuth client id")
		scopes := fs.String("scopes", "", "the scopes the key may be asked for, space- or comma-separated (required)")
		secretFile := fs.String("client-secret-file", "", `file holding the client secret ("-": standard input)`)
		run = func(c brokerv1connect.ApiKeyServiceClient, tok string) error {
			secret, err := readSecret(bufio.NewReader(stdin), *secretFile, "client secret")
			if err != nil {
				return err
			}
			req := withBearer(&brokerv1.CreateApiKeyRequest{Name: *name, ClientId: *clientID, ClientSecret: secret,
				Scopes: splitScopes(*scopes)}, tok)
			resp, err := c.CreateApiKey(ctx, req)
			if err != nil {
				return fmt.Errorf("registering API key at %s: %w", *server, err)
			}
			k := resp.Msg.GetApiKey()
			fmt.Fprintf(stdout, "registered API key %s (client id ...%s, scopes %s)\n", k.GetName(), k.GetClientIdHint(), strings.Join(k.GetScopes(), " "))
			return nil
		}
	case "list":
		asJSON := fs.Bool("json", false, "one JSON object per API key, for scripts")
		run = func(c brokerv1connect.ApiKeyServiceClient, tok string) error {
			req := withBearer(&brokerv1.ListApiKeysRequest{}, tok)
			resp, err := c.ListApiKeys(ctx, req)
			if err != nil {
				return fmt.Errorf("listing API keys at %s: %w", *server, err)
			}
			return printAPIKeys(stdout, resp.Msg.GetApiKeys(), *asJSON)
		}
	case "delete":
		run = func(c brokerv1connect.ApiKeyServiceClient, tok string) error {
			req := withBearer(&brokerv1.DeleteApiKeyRequest{Name: *name}, tok)
			if _, err := c.DeleteApiKey(ctx, req); err != nil {
				return fmt.Errorf("deleting API key at %s: %w", *server, err)
			}
			fmt.Fprintf(stdout, "deleted API key %s\n", *name)
			return nil
		}
	default:
		return fmt.Errorf("unknown api-keys command %q\n%s", args[0], apiKeysUsage)
	}
	tok, err := adminCommand(fs, args, name, lookup, apiKeysUsage)
	if err != nil {
		return err
	}
	return run(brokerv1connect.NewApiKeyServiceClient(adminHTTPClient(), *server), tok)
}

func printAPIKeys(stdout io.Writer, keys []*brokerv1.ApiKey, asJSON bool) error {
	if asJSON {
		return printJSONLines(stdout, keys)
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCLIENT ID\tSTATUS\tSCOPES\tCREATED\tLAST TOKEN\tLAST ERROR")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t...%s\t%s\t%s\t%s\t%s\t%s\n", k.GetName(), escapeControl(k.GetClientIdHint()), k.GetStatus(),
			strings.Join(k.GetScopes(), " "), timeCell(k.GetCreatedAt()), timeCell(k.GetLastTokenAt()), escapeControl(k.GetLastError()))
	}
	return tw.Flush()
}
