package main

import (
	"io"
	"net/http"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// devWebhookReceiver: unless EVENT_WEBHOOK_URL is set, dev serves a
// throwaway webhook receiver beside the simulator, printing (and
// verifying) each event webhook to out, and returns the defaults pointing
// the broker at it with a fresh whsec_ secret.
func devWebhookReceiver(sim http.Handler, lookup env, out io.Writer) (http.Handler, map[string]func(simURL string) string) {
	if v, ok := lookup("EVENT_WEBHOOK_URL"); ok && v != "" {
		return sim, nil
	}
	secret := trackunitsim.NewWebhookSecret()
	mux := http.NewServeMux()
	mux.Handle(trackunitsim.WebhookPath, trackunitsim.NewWebhookReceiver(secret, out))
	mux.Handle("/", sim)
	return mux, map[string]func(string) string{
		"EVENT_WEBHOOK_URL":    func(simURL string) string { return simURL + trackunitsim.WebhookPath },
		"EVENT_WEBHOOK_SECRET": func(string) string { return secret },
	}
}
