package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/irisx-broker/irisx-broker/config"
	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/internal/kms"
	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// Dev-mode defaults. They only ever apply under `irisx-broker dev`, which
// binds loopback addresses, so they cannot leak into a production `serve`.
const (
	devDatabaseURL   = "postgres://postgres@127.0.0.1:5432/irisx_broker?sslmode=disable"
	devAppID         = "@irisx/dev-app"
	devInternalToken = "dev-internal-token"
	devAdminToken    = "dev-admin-token-0"
	devScopes        = "asset.view account.view"

	// The API user the dev simulator knows, for the API-user commands.
	devAPIUsername     = "dev-api-user@example.com"
	devAPIPassword     = "dev-password"
	devAPIClientID     = "0oadevapiuser0000000"
	devAPIClientSecret = "dev-client-secret"

	// The API key the dev simulator knows, for the API-key commands.
	devKeyClientID     = "0oadevapikey00000000"
	devKeyClientSecret = "dev-api-key-secret"
	devKeyScopes       = "asset.view account.view"
)

// runDev is serve plus an in-process Trackunit simulator and a throwaway
// key kept in .dev/, for a first run with nothing configured but Postgres.
func runDev(ctx context.Context, args []string, lookup env, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	simAddr := fs.String("sim-addr", "127.0.0.1:8090", "listener of the in-process Trackunit simulator")
	stateDir := fs.String("state-dir", ".dev", "where the dev encryption key is kept between runs")
	if err := fs.Parse(args); err != nil {
		return errReported
	}
	dbURL := lookupOr(lookup, "DATABASE_URL", devDatabaseURL)
	if err := ensureDatabase(ctx, dbURL); err != nil {
		return err
	}
	key, err := devKey(*stateDir)
	if err != nil {
		return err
	}
	sim, err := trackunitsim.New(trackunitsim.Options{})
	if err != nil {
		return err
	}
	sim.AddUser(devAPIUsername, devAPIPassword, devAPIClientID, devAPIClientSecret)
	sim.AddAPIKey(devKeyClientID, devKeyClientSecret, strings.Fields(devKeyScopes))
	simLn, err := net.Listen("tcp", *simAddr)
	if err != nil {
		return fmt.Errorf("simulator listener: %w", err)
	}
	simHandler, webhookDefaults := devWebhookReceiver(sim.Handler(), lookup, stdout)
	simSrv := &http.Server{Handler: simHandler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = simSrv.Serve(simLn) }()
	defer simSrv.Close()
	simURL := "http://" + simLn.Addr().String()

	defaults := map[string]string{
		"DATABASE_URL":        dbURL,
		"PUBLIC_ADDR":         "127.0.0.1:8080",
		"INTERNAL_ADDR":       "127.0.0.1:8081",
		"ENCRYPTION_KEYS":     key,
		"INTERNAL_API_TOKENS": devInternalToken,
		"ADMIN_API_TOKENS":    devAdminToken,
		"TRACKUNIT_JWKS_URL":  simURL + "/api/marketplace/jwks",
		"TRACKUNIT_AUTH_URL":  simURL,
		"IRIS_API_URL":        simURL,
		"ALLOWED_APP_IDS":     devAppID,
		"DEFAULT_SCOPES":      devScopes,
		"LOG_FORMAT":          "text",
	}
	for k, v := range webhookDefaults {
		defaults[k] = v(simURL)
	}
	devLookup := func(k string) (string, bool) {
		if v, ok := lookup(k); ok && v != "" && k != "ENCRYPTION_KEYS_FILE" {
			return v, true
		}
		v, ok := defaults[k]
		return v, ok
	}
	cfg, err := config.Load(ctx, devLookup, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errReported
	}
	if cfg.Keyring, err = kms.ResolveKeyring(ctx, cfg.KMSKeyURL, cfg.WrappedKeys, cfg.Keyring); err != nil {
		return err
	}
	return serve(ctx, cfg, serveOptions{
		migrate: true,
		logger:  newLogger(cfg, stderr),
		// OTEL_TRACES_EXPORTER=console prints the spans as JSON here.
		lookup: lookup, traceOutput: stdout,
		onListening: func(public, internal string) {
			printDevCommands(stdout, simURL, public, internal)
		},
	})
}

func lookupOr(lookup env, k, def string) string {
	if v, ok := lookup(k); ok && v != "" {
		return v
	}
	return def
}

// devKey returns the dev keyring entry, creating it on first use. It is
// kept so that installs stored by one `make run` still decrypt in the next.
func devKey(dir string) (string, error) {
	path := filepath.Join(dir, "encryption-key")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	entry, err := crypto.GenerateKey("dev")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := os.WriteFile(path, []byte(entry+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the dev key: %w", err)
	}
	return entry, nil
}

// ensureDatabase creates the database named in dbURL when it is missing,
// connecting to the server's `postgres` database to do so.
func ensureDatabase(ctx context.Context, dbURL string) error {
	u, err := url.Parse(dbURL)
	if err != nil {
		return errors.New("DATABASE_URL: not a URL")
	}
	name := strings.TrimPrefix(u.Path, "/")
	if name == "" {
		return errors.New("DATABASE_URL: names no database")
	}
	admin := *u
	admin.Path = "/postgres"
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		return fmt.Errorf("connecting to Postgres at %s: %w", u.Host, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	return err
}

func printDevCommands(w io.Writer, simURL, public, internal string) {
	account := uuid.NewString()
	fmt.Fprintf(w, `
irisx-broker dev is running.
  public listener:    http://%[2]s   (POST /appinstall, /healthz, /readyz)
  internal listener:  http://%[3]s   (Connect/gRPC APIs, /admin, /metrics)
  Trackunit simulator: %[1]s
  dev tokens: internal %[5]q, admin %[6]q

Send a signed sample install (the simulator signs it and calls the broker):
  curl -s %[1]s/sim/send -H 'Content-Type: application/json' \
    -d '{"to":"http://%[2]s/appinstall","type":"INSTALLED","irisAppId":"%[7]s","accountId":"%[4]s"}'

Fetch an IRIS access token for that account:
  curl -s http://%[3]s/irisx.broker.v1.TokenService/GetToken \
    -H 'Authorization: Bearer %[5]s' -H 'Content-Type: application/json' \
    -d '{"accountId":"%[4]s"}'

Call the IRIS API as that account through the broker (the simulator's IRIS stand-in echoes what it got):
  curl -s 'http://%[3]s/iris/accounts/%[4]s/api/echo?hello=world' -H 'Authorization: Bearer %[5]s'
  curl -s http://%[3]s/iris/accounts/%[4]s/api/graphql/ -H 'Authorization: Bearer %[5]s' \
    -H 'Content-Type: application/json' -d '{"query":"{ assets { id } }"}'

List installs:
  curl -s http://%[3]s/irisx.broker.v1.InstallService/ListInstalls \
    -H 'Authorization: Bearer %[6]s' -H 'Content-Type: application/json' -d '{}'

Watch the install lifecycle events (add --after <id> to resume after an event):
  IRISX_TOKEN=%[5]s go run ./cmd/irisx-broker events watch --server http://%[3]s

Register the simulator's API user (password and client secret on standard input), then get its token:
  printf '%%s\n%%s\n' %[10]s %[11]s | IRISX_ADMIN_TOKEN=%[6]s \
    go run ./cmd/irisx-broker api-users add --server http://%[3]s --name dev --username %[8]s --client-id %[9]s
  curl -s http://%[3]s/irisx.broker.v1.TokenService/GetApiUserToken \
    -H 'Authorization: Bearer %[5]s' -H 'Content-Type: application/json' -d '{"name":"dev"}'

Register the simulator's API key (client secret on standard input), then get its token:
  printf '%%s\n' %[12]s | IRISX_ADMIN_TOKEN=%[6]s \
    go run ./cmd/irisx-broker api-keys add --server http://%[3]s --name dev --client-id %[13]s --scopes %[14]q
  curl -s http://%[3]s/irisx.broker.v1.TokenService/GetApiKeyToken \
    -H 'Authorization: Bearer %[5]s' -H 'Content-Type: application/json' -d '{"name":"dev"}'

`, simURL, public, internal, account, devInternalToken, devAdminToken, devAppID,
		devAPIUsername, devAPIClientID, devAPIPassword, devAPIClientSecret,
		devKeyClientSecret, devKeyClientID, devKeyScopes)
}
