package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
)

const apiUsersUsage = `usage:
  api-users add --name NAME --username USER --client-id ID [--scopes "api offline_access"]
                [--password-file FILE] [--client-secret-file FILE]
  api-users list [--json]
  api-users delete --name NAME
every command also takes --server URL (env IRISX_BROKER_SERVER) and needs env IRISX_ADMIN_TOKEN.
add reads the password and the client secret from their files, or else from standard input:
the password on the first line, the client secret on the second. They are never arguments,
which would show in the process list and the shell history.`

// runAPIUsers talks to a running service's ApiUserService, like installs
// list, so operators need only an admin token.
func runAPIUsers(ctx context.Context, args []string, lookup env, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("a command is required\n%s", apiUsersUsage)
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stdout, apiUsersUsage)
		return nil
	}
	fs := flag.NewFlagSet("api-users "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server := fs.String("server", lookupOr(lookup, "IRISX_BROKER_SERVER", "http://127.0.0.1:8081"), "the service's internal listener")
	name := fs.String("name", "", "the name the API user is registered under")
	var run func(brokerv1connect.ApiUserServiceClient, string) error
	switch args[0] {
	case "add":
		username := fs.String("username", "", "the Trackunit API user name")
		clientID := fs.String("client-id", "", "the API user's OAuth client id")
		scopes := fs.String("scopes", "", `scopes to request, space- or comma-separated (default "api offline_access")`)
		passwordFile := fs.String("password-file", "", `file holding the password ("-": standard input)`)
		secretFile := fs.String("client-secret-file", "", `file holding the client secret ("-": standard input)`)
		run = func(c brokerv1connect.ApiUserServiceClient, tok string) error {
			in := bufio.NewReader(stdin)
			password, err := readSecret(in, *passwordFile, "password")
			if err != nil {
				return err
			}
			secret, err := readSecret(in, *secretFile, "client secret")
			if err != nil {
				return err
			}
			req := withBearer(&brokerv1.CreateApiUserRequest{Name: *name, Username: *username, Password: password,
				ClientId: *clientID, ClientSecret: secret, Scopes: splitScopes(*scopes)}, tok)
			resp, err := c.CreateApiUser(ctx, req)
			if err != nil {
				return fmt.Errorf("registering API user at %s: %w", *server, err)
			}
			u := resp.Msg.GetApiUser()
			fmt.Fprintf(stdout, "registered API user %s (username %s, scopes %s)\n", u.GetName(), u.GetUsername(), strings.Join(u.GetScopes(), " "))
			return nil
		}
	case "list":
		asJSON := fs.Bool("json", false, "one JSON object per API user, for scripts")
		run = func(c brokerv1connect.ApiUserServiceClient, tok string) error {
			req := withBearer(&brokerv1.ListApiUsersRequest{}, tok)
			resp, err := c.ListApiUsers(ctx, req)
			if err != nil {
				return fmt.Errorf("listing API users at %s: %w", *server, err)
			}
			return printAPIUsers(stdout, resp.Msg.GetApiUsers(), *asJSON)
		}
	case "delete":
		run = func(c brokerv1connect.ApiUserServiceClient, tok string) error {
			req := withBearer(&brokerv1.DeleteApiUserRequest{Name: *name}, tok)
			if _, err := c.DeleteApiUser(ctx, req); err != nil {
				return fmt.Errorf("deleting API user at %s: %w", *server, err)
			}
			fmt.Fprintf(stdout, "deleted API user %s\n", *name)
			return nil
		}
	default:
		return fmt.Errorf("unknown api-users command %q\n%s", args[0], apiUsersUsage)
	}
	tok, err := adminCommand(fs, args, name, lookup, apiUsersUsage)
	if err != nil {
		return err
	}
	return run(brokerv1connect.NewApiUserServiceClient(adminHTTPClient(), *server), tok)
}

// adminCommand finishes the parsing of an `api-users` or `api-keys`
// command (args[0] is the command, the rest its flags, already defined on
// fs, name among them): no stray arguments, --name unless listing, and the admin token from
// IRISX_ADMIN_TOKEN. Errors end with usage.
func adminCommand(fs *flag.FlagSet, args []string, name *string, lookup env, usage string) (string, error) {
	if err := fs.Parse(args[1:]); err != nil {
		// The flag package names an unknown flag, never its value, so a
		// password given as --password=... is not echoed.
		return "", fmt.Errorf("%w\n%s", err, usage)
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected arguments after the flags\n%s", usage)
	}
	if args[0] != "list" && *name == "" {
		return "", fmt.Errorf("--name is required\n%s", usage)
	}
	return adminToken(lookup)
}

// readSecret reads one secret from file, or from the next line of in when
// file is empty or "-". Only the line ending is removed: spaces may be part
// of a password.
func readSecret(in *bufio.Reader, file, what string) (string, error) {
	var v string
	if file != "" && file != "-" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading the %s: %w", what, err)
		}
		v = string(b)
		v = strings.TrimSuffix(strings.TrimSuffix(v, "\n"), "\r")
	} else {
		line, err := in.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading the %s from standard input: %w", what, err)
		}
		v = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	}
	if v == "" {
		return "", fmt.Errorf("no %s given: put it on standard input or in a file named with --%s-file", what, strings.ReplaceAll(what, " ", "-"))
	}
	return v, nil
}

func printAPIUsers(stdout io.Writer, users []*brokerv1.ApiUser, asJSON bool) error {
	if asJSON {
		return printJSONLines(stdout, users)
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tUSERNAME\tSTATUS\tSCOPES\tUPDATED\tLAST TOKEN\tLAST ERROR")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", u.GetName(), escapeControl(u.GetUsername()), u.GetStatus(),
			strings.Join(u.GetScopes(), " "), timeCell(u.GetUpdatedAt()), timeCell(u.GetLastTokenAt()), escapeControl(u.GetLastError()))
	}
	return tw.Flush()
}
