package main

import (
	"context"
	"fmt"
	"net/url"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// send signs and sends one install callback, through a running simulator
// (--sim, which then knows the credentials at /apptoken; by default the one
// `trackunit-sim serve` runs at its default address) or locally with a key
// file (--keys).
func send(ctx context.Context, args []string, e env) error {
	set := e.flags("send")
	to := set.String("to", "", "callback URL, e.g. http://127.0.0.1:8080/appinstall")
	app := set.String("app", "", "irisAppId, e.g. @org/app")
	account := set.String("account", "", "accountId (a UUID)")
	typ := set.String("type", trackunitsim.EventInstalled, "event type: INSTALLED, UNINSTALLED, ...")
	clientID := set.String("client-id", "", "client id to send (generated for INSTALLED when empty)")
	secretFile := set.String("client-secret-file", "", "file holding the client secret (generated for INSTALLED when empty)")
	simURL := simFlag(e, set)
	keys := set.String("keys", "", "key file to sign with locally, instead of --sim")
	issuer := set.String("issuer", "", "iss of the identity JWT (--keys only)")
	audience := set.String("audience", "", "aud of the identity JWT (--keys only)")
	if err := parse(set, args); err != nil {
		return err
	}
	if err := required("--to", *to, "--app", *app, "--account", *account); err != nil {
		return err
	}
	if u, err := url.Parse(*to); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--to %q: want an absolute http(s) URL", *to)
	}
	if *keys != "" {
		*simURL = "" // an explicit --keys wins over --sim and its defaults
	}
	if *simURL == "" && *keys == "" {
		return fmt.Errorf("give --sim URL or --keys FILE")
	}

	ev := trackunitsim.InstallEvent{Type: *typ, IrisAppID: *app, AccountID: *account, ClientID: *clientID}
	if *secretFile != "" {
		secret, err := readSecretFile(*secretFile)
		if err != nil {
			return err
		}
		ev.ClientSecret = secret
	}
	if ev.Type == trackunitsim.EventInstalled && *keys != "" {
		// The simulator generates missing credentials itself; locally we do.
		genID, genSecret := trackunitsim.NewClientCredentials()
		if ev.ClientID == "" {
			ev.ClientID = genID
		}
		if ev.ClientSecret.IsZero() {
			ev.ClientSecret = genSecret
		}
	}

	var status int
	var body []byte
	if *simURL != "" {
		c := &trackunitsim.Client{BaseURL: *simURL}
		resp, err := c.Send(ctx, trackunitsim.SendRequest{
			To: *to, Type: ev.Type, IrisAppID: ev.IrisAppID, AccountID: ev.AccountID,
			ClientID: ev.ClientID, ClientSecret: ev.ClientSecret,
		})
		if err != nil {
			return err
		}
		status, body, ev.ClientID = resp.Status, []byte(resp.Body), resp.ClientID
	} else {
		sim, err := trackunitsim.LoadSim(*keys, trackunitsim.Options{Issuer: *issuer, Audience: *audience})
		if err != nil {
			return err
		}
		if status, body, err = sim.SendInstall(ctx, *to, ev, ""); err != nil {
			return err
		}
	}
	if ev.ClientID != "" {
		fmt.Fprintf(e.stderr, "sent %s for %s / %s with client_id %s\n", ev.Type, ev.IrisAppID, ev.AccountID, ev.ClientID)
	}
	fmt.Fprintf(e.stdout, "HTTP %d\n%s\n", status, body)
	if status/100 != 2 {
		return fmt.Errorf("the callback answered HTTP %d", status)
	}
	return nil
}
