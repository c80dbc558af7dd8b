package client

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
	"github.com/irisx-broker/irisx-broker/crypto"
)

// Event is an install lifecycle event: "install.installed",
// "install.uninstalled" or "install.credentials_rejected". IDs sort in
// commit order as strings.
type Event struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	OccurredAt time.Time `json:"occurredAt"`
	IrisAppID  string    `json:"irisAppId"`
	AccountID  string    `json:"accountId"`
	Status     string    `json:"status"`
}

// Events reads the broker's EventService with an INTERNAL_API_TOKENS or
// ADMIN_API_TOKENS token.
type Events struct {
	svc brokerv1connect.EventServiceClient
	// sleep waits between reconnects; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
}

// NewEvents returns an EventService client for the internal listener at
// baseURL. Its default HTTP client has no overall time-out, since a
// stream lasts as long as the caller wants.
func NewEvents(baseURL, bearerToken string, opts ...Option) *Events {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	httpClient := o.httpClient
	if httpClient == nil {
		c := defaultHTTPClient(o.grpc)
		c.Timeout = 0
		httpClient = c
	}
	clientOpts := []connect.ClientOption{connect.WithInterceptors(streamBearer(crypto.Secret(bearerToken)))}
	if o.grpc {
		clientOpts = append(clientOpts, connect.WithGRPC())
	}
	return &Events{svc: brokerv1connect.NewEventServiceClient(httpClient, baseURL, clientOpts...), sleep: sleepCtx}
}

// List returns up to pageSize events after afterID (empty: from the
// oldest), oldest first, and the id to pass for the next page.
func (e *Events) List(ctx context.Context, afterID string, pageSize int) ([]Event, string, error) {
	resp, err := e.svc.ListEvents(ctx, connect.NewRequest(&brokerv1.ListEventsRequest{AfterId: afterID, PageSize: int32(pageSize)}))
	if err != nil {
		return nil, "", err
	}
	out := make([]Event, 0, len(resp.Msg.Events))
	for _, ev := range resp.Msg.Events {
		out = append(out, fromProto(ev))
	}
	return out, resp.Msg.NextAfterId, nil
}

// WatchEvents calls fn for every event after afterID (empty: from the
// oldest retained), in commit order, then for each new one as it commits.
// When the connection drops it reconnects with backoff and resumes after
// the last event fn accepted, so fn sees no gap and no duplicate. It
// returns fn's error, ctx's, or a refusal no retry can fix
// (unauthenticated, invalid argument). To resume across restarts, store
// the last ID fn handled and pass it here.
func (e *Events) WatchEvents(ctx context.Context, afterID string, fn func(Event) error) error {
	backoff := 500 * time.Millisecond
	for {
		received, err := e.watchOnce(ctx, &afterID, fn)
		var fnErr *callbackError
		switch {
		case errors.As(err, &fnErr):
			return fnErr.err
		case ctx.Err() != nil:
			return ctx.Err()
		case permanent(err):
			return err
		}
		if received {
			backoff = 500 * time.Millisecond
		}
		if err := e.sleep(ctx, backoff/2+rand.N(backoff/2+1)); err != nil {
			return err
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

func (e *Events) watchOnce(ctx context.Context, afterID *string, fn func(Event) error) (received bool, err error) {
	stream, err := e.svc.WatchEvents(ctx, connect.NewRequest(&brokerv1.WatchEventsRequest{AfterId: *afterID}))
	if err != nil {
		return false, err
	}
	defer stream.Close()
	for stream.Receive() {
		ev := fromProto(stream.Msg().GetEvent())
		if ev.ID <= *afterID && *afterID != "" {
			continue // never hand fn an event twice
		}
		if err := fn(ev); err != nil {
			return true, &callbackError{err}
		}
		*afterID, received = ev.ID, true
	}
	if err := stream.Err(); err != nil {
		return received, err
	}
	return received, errors.New("event stream ended")
}

func permanent(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated, connect.CodeInvalidArgument, connect.CodePermissionDenied, connect.CodeUnimplemented:
		return true
	}
	return false
}

func fromProto(ev *brokerv1.Event) Event {
	return Event{ID: ev.GetId(), Type: ev.GetType(), OccurredAt: ev.GetOccurredAt().AsTime(),
		IrisAppID: ev.GetIrisAppId(), AccountID: ev.GetAccountId(), Status: ev.GetStatus()}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// streamBearer adds the bearer token to unary and streaming calls.
type streamBearer crypto.Secret

func (b streamBearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+crypto.Secret(b).Reveal())
		return next(ctx, req)
	}
}

func (b streamBearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+crypto.Secret(b).Reveal())
		return conn
	}
}

func (b streamBearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// WebhookTolerance is how far a webhook-timestamp may be from now.
const WebhookTolerance = 5 * time.Minute

// ErrWebhookSignature is returned for a webhook that fails verification.
var ErrWebhookSignature = errors.New("webhook signature verification failed")

// VerifyWebhook checks a Standard Webhooks delivery from the broker:
// secret is EVENT_WEBHOOK_SECRET ("whsec_..."), header and body the
// request's. It returns the event, or an error wrapping
// ErrWebhookSignature when the signature does not match or the timestamp
// is more than WebhookTolerance from now (a replay). Use the event's ID
// (equal to the webhook-id header) to ignore a redelivery already handled.
func VerifyWebhook(secret string, header http.Header, body []byte) (Event, error) {
	return verifyWebhookAt(secret, header, body, time.Now())
}

func verifyWebhookAt(secret string, header http.Header, body []byte, now time.Time) (Event, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(key) == 0 {
		return Event{}, errors.New("webhook secret is not whsec_ followed by base64")
	}
	id, ts, sigs := header.Get("webhook-id"), header.Get("webhook-timestamp"), header.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return Event{}, fmt.Errorf("%w: missing webhook headers", ErrWebhookSignature)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Event{}, fmt.Errorf("%w: malformed webhook-timestamp", ErrWebhookSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > WebhookTolerance || d < -WebhookTolerance {
		return Event{}, fmt.Errorf("%w: webhook-timestamp outside the tolerance", ErrWebhookSignature)
	}
	if !signatureMatches(key, id, ts, body, sigs) {
		return Event{}, ErrWebhookSignature
	}
	var p struct {
		Data Event `json:"data"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return Event{}, fmt.Errorf("webhook body: %w", err)
	}
	if p.Data.ID != id {
		return Event{}, fmt.Errorf("%w: webhook-id does not match the event", ErrWebhookSignature)
	}
	return p.Data, nil
}

// signatureMatches reports whether one of the space-separated "v1,<b64>"
// signatures is the HMAC-SHA256 of "id.ts.body" under key.
func signatureMatches(key []byte, id, ts string, body []byte, sigs string) bool {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	ok := false
	for _, s := range strings.Fields(sigs) {
		v, b64, found := strings.Cut(s, ",")
		got, err := base64.StdEncoding.DecodeString(b64)
		if found && v == "v1" && err == nil && hmac.Equal(got, want) {
			ok = true
		}
	}
	return ok
}
