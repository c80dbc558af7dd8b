package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/irisx-broker/irisx-broker/store"
)

// maxResponseRead bounds how much of a receiver's answer is read (and
// discarded) so the connection can be reused.
const maxResponseRead = 64 << 10

// AttemptTimeout is how long a receiver has to answer one delivery.
const AttemptTimeout = 10 * time.Second

// EventJSON is an event as the API and the webhooks show it (protojson
// names).
type EventJSON struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	OccurredAt string `json:"occurredAt"`
	IrisAppID  string `json:"irisAppId"`
	AccountID  string `json:"accountId"`
	Status     string `json:"status"`
}

// ToJSON is ev's public form.
func ToJSON(ev *store.LifecycleEvent) EventJSON {
	return EventJSON{ID: ev.ID(), Type: ev.Type, OccurredAt: ev.OccurredAt.UTC().Format(time.RFC3339Nano),
		IrisAppID: ev.IrisAppID, AccountID: ev.AccountID, Status: string(ev.Status)}
}

// webhookBody is the Standard Webhooks payload: {"type","timestamp","data"}.
func webhookBody(ev *store.LifecycleEvent) ([]byte, error) {
	return json.Marshal(struct {
		Type      string    `json:"type"`
		Timestamp string    `json:"timestamp"`
		Data      EventJSON `json:"data"`
	}{ev.Type, ev.OccurredAt.UTC().Format(time.RFC3339Nano), ToJSON(ev)})
}

// post makes one delivery attempt at time now. It returns "" on a 2xx,
// else a short reason ("http_500", "timeout", "connect_error"), never the
// receiver's text.
func (d *Deliverer) post(ctx context.Context, ev *store.LifecycleEvent, now time.Time) string {
	body, err := webhookBody(ev)
	if err != nil {
		return "encode_error"
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(body))
	if err != nil {
		return "bad_url"
	}
	id := ev.ID()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "irisx-broker-webhooks")
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(HeaderSignature, d.signer.Sign(id, now, body))
	resp, err := d.http.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			return "timeout"
		}
		return "connect_error"
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseRead))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return ""
	}
	return fmt.Sprintf("http_%d", resp.StatusCode)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
