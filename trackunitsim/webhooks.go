package trackunitsim

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/irisx-broker/irisx-broker/client"
)

// WebhookPath is where a WebhookReceiver is mounted by the simulator's
// command and by dev mode.
const WebhookPath = "/webhooks"

// maxWebhookBody bounds what the receiver reads.
const maxWebhookBody = 1 << 20

// ReceivedWebhook is one delivery the receiver got.
type ReceivedWebhook struct {
	ID       string
	Event    client.Event
	Verified bool
}

// WebhookReceiver is a throwaway Standard Webhooks receiver for the
// broker's event webhooks: it verifies each delivery with
// client.VerifyWebhook, prints one line per delivery to Out, answers 204
// when the signature holds and 401 when it does not (so the broker retries).
type WebhookReceiver struct {
	secret string
	out    io.Writer

	mu  sync.Mutex
	got []ReceivedWebhook
}

// NewWebhookReceiver returns a receiver verifying under secret
// ("whsec_..."), printing to out (nil: nowhere).
func NewWebhookReceiver(secret string, out io.Writer) *WebhookReceiver {
	if out == nil {
		out = io.Discard
	}
	return &WebhookReceiver{secret: secret, out: out}
}

// NewWebhookSecret returns a fresh "whsec_" secret of 32 random bytes.
func NewWebhookSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// ServeHTTP handles one delivery.
func (r *WebhookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxWebhookBody))
	if err != nil {
		http.Error(w, "unreadable body", http.StatusBadRequest)
		return
	}
	ev, err := client.VerifyWebhook(r.secret, req.Header, body)
	rec := ReceivedWebhook{ID: req.Header.Get("webhook-id"), Event: ev, Verified: err == nil}
	r.mu.Lock()
	r.got = append(r.got, rec)
	r.mu.Unlock()
	if err != nil {
		fmt.Fprintf(r.out, "webhook %s REFUSED: %v\n", rec.ID, err)
		http.Error(w, "signature verification failed", http.StatusUnauthorized)
		return
	}
	fmt.Fprintf(r.out, "webhook %s %s app=%s account=%s status=%s signature=verified\n",
		ev.ID, ev.Type, ev.IrisAppID, ev.AccountID, ev.Status)
	w.WriteHeader(http.StatusNoContent)
}

// Received lists the deliveries so far, oldest first.
func (r *WebhookReceiver) Received() []ReceivedWebhook {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ReceivedWebhook(nil), r.got...)
}
