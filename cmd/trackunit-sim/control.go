package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// simFlag adds the --sim flag, defaulting to $TRACKUNIT_SIM_URL, else to
// where `trackunit-sim serve` listens by default.
func simFlag(e env, set *flag.FlagSet) *string {
	return set.String("sim", cmp.Or(e.getenv("TRACKUNIT_SIM_URL"), defaultSimURL), "URL of the running simulator (env TRACKUNIT_SIM_URL)")
}

// fault injects or clears faults in a running simulator.
func fault(ctx context.Context, args []string, e env) error {
	set := e.flags("fault")
	sim := simFlag(e, set)
	endpoint := set.String("endpoint", trackunitsim.EndpointAppToken, "apptoken, token or jwks")
	status := set.Int("status", 0, "HTTP status to answer")
	retryAfter := set.String("retry-after", "", "Retry-After header value")
	times := set.Int("times", 0, "number of requests to fault (0: until cleared)")
	latency := set.Duration("latency", 0, "delay before answering")
	html := set.Bool("html", false, "answer an HTML error page")
	code := set.String("error-code", "", "OAuth error code: invalid_client, invalid_scope, invalid_grant, ...")
	okta := set.Bool("okta", false, "Okta's {errorCode, errorSummary, errorId} body shape")
	hang := set.Bool("hang", false, "never answer")
	clearAll := set.Bool("clear", false, "remove every fault instead")
	if err := parse(set, args); err != nil {
		return err
	}
	if err := required("--sim", *sim); err != nil {
		return err
	}
	c := &trackunitsim.Client{BaseURL: *sim}
	if *clearAll {
		if err := c.ClearFaults(ctx); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "faults cleared")
		return nil
	}
	if *status == 0 && *code == "" && *latency == 0 && !*hang {
		return fmt.Errorf("nothing to inject: give --status, --error-code, --latency or --hang (or --clear)")
	}
	req := trackunitsim.FaultRequest{
		Endpoint: *endpoint, Status: *status, RetryAfter: *retryAfter, HTMLBody: *html,
		ErrorCode: *code, OktaShape: *okta, Hang: *hang, Times: *times,
	}
	if *latency > 0 {
		req.Latency = latency.String()
	}
	if err := c.InjectFault(ctx, req); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "fault set on %s\n", *endpoint)
	return nil
}

// rotate makes the simulator sign with a new key.
func rotate(ctx context.Context, args []string, e env) error {
	set := e.flags("rotate")
	sim := simFlag(e, set)
	kind := set.String("kind", "RS256", "key algorithm: RS256, PS256, ES256, ES384, EdDSA, ...")
	if err := parse(set, args); err != nil {
		return err
	}
	if err := required("--sim", *sim); err != nil {
		return err
	}
	kid, err := (&trackunitsim.Client{BaseURL: *sim}).Rotate(ctx, *kind)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, kid)
	return nil
}

// revoke makes the simulator's /apptoken refuse a client.
func revoke(ctx context.Context, args []string, e env) error {
	set := e.flags("revoke")
	sim := simFlag(e, set)
	clientID := set.String("client-id", "", "client to revoke")
	if err := parse(set, args); err != nil {
		return err
	}
	if err := required("--sim", *sim, "--client-id", *clientID); err != nil {
		return err
	}
	if err := (&trackunitsim.Client{BaseURL: *sim}).Revoke(ctx, *clientID); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "revoked %s\n", *clientID)
	return nil
}

// user registers a /token API user; its secrets come from files.
func user(ctx context.Context, args []string, e env) error {
	set := e.flags("user")
	sim := simFlag(e, set)
	username := set.String("username", "", "API user name")
	clientID := set.String("client-id", "", "the user's OAuth client id")
	passwordFile := set.String("password-file", "", "file holding the password")
	secretFile := set.String("client-secret-file", "", "file holding the client secret")
	if err := parse(set, args); err != nil {
		return err
	}
	if err := required("--sim", *sim, "--username", *username, "--client-id", *clientID,
		"--password-file", *passwordFile, "--client-secret-file", *secretFile); err != nil {
		return err
	}
	password, err := readSecretFile(*passwordFile)
	if err != nil {
		return err
	}
	secret, err := readSecretFile(*secretFile)
	if err != nil {
		return err
	}
	err = (&trackunitsim.Client{BaseURL: *sim}).AddUser(ctx, trackunitsim.UserRequest{
		Username: *username, Password: password, ClientID: *clientID, ClientSecret: secret,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "user %s registered\n", *username)
	return nil
}

// stats prints the simulator's counters as JSON.
func stats(ctx context.Context, args []string, e env) error {
	set := e.flags("stats")
	sim := simFlag(e, set)
	if err := parse(set, args); err != nil {
		return err
	}
	if err := required("--sim", *sim); err != nil {
		return err
	}
	st, err := (&trackunitsim.Client{BaseURL: *sim}).Stats(ctx)
	if err != nil {
		return err
	}
	out, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s\n", out)
	return nil
}
