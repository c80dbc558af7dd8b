package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"

	"github.com/irisx-broker/irisx-broker/trackunitsim"
)

// withWebhookReceiver mounts a printing, verifying webhook receiver beside
// the simulator when secretFile is set: the secret is read from it, or a
// fresh one is written to it (mode 0600) for the broker's
// EVENT_WEBHOOK_SECRET_FILE.
func withWebhookReceiver(sim http.Handler, secretFile string, out io.Writer) (http.Handler, error) {
	if secretFile == "" {
		return sim, nil
	}
	b, err := os.ReadFile(secretFile)
	secret := strings.TrimSpace(string(b))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		secret = trackunitsim.NewWebhookSecret()
		if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("webhook secret file: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("webhook secret file: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(trackunitsim.WebhookPath, trackunitsim.NewWebhookReceiver(secret, out))
	mux.Handle("/", sim)
	fmt.Fprintf(out, "  webhook receiver: EVENT_WEBHOOK_URL=http://<this address>%s EVENT_WEBHOOK_SECRET_FILE=%s\n",
		trackunitsim.WebhookPath, secretFile)
	return mux, nil
}
