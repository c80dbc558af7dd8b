package events_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/irisx-broker/irisx-broker/crypto"
	"github.com/irisx-broker/irisx-broker/events"
	"github.com/irisx-broker/irisx-broker/internal/testdb"
	"github.com/irisx-broker/irisx-broker/internal/testkit"
	"github.com/irisx-broker/irisx-broker/store"
)

const (
	app    = "@acme/fleet-app"
	secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

func account(i int) string { return fmt.Sprintf("6f1c0e9a-1b2c-4d3e-8f40-%012d", i) }

// received is one request the test receiver got.
type received struct {
	ID, Timestamp, Signature string
	Body                     []byte
	Event                    events.EventJSON
	Type                     string
	Verified                 bool
	Status                   int // answered; 0 for a hang
}

// receiver is a webhook receiver whose answer the test controls.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	got    []received
	answer func(n int) int // status for the n-th request (0-based); 0 means hang
	hang   chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, answer: func(int) int { return http.StatusNoContent }, hang: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() { close(r.hang); r.srv.Close() })
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	rec := received{ID: req.Header.Get("webhook-id"), Timestamp: req.Header.Get("webhook-timestamp"),
		Signature: req.Header.Get("webhook-signature"), Body: body}
	rec.Verified = verifySpec(secret, rec.ID, rec.Timestamp, body, rec.Signature)
	var p struct {
		Type string           `json:"type"`
		Data events.EventJSON `json:"data"`
	}
	_ = json.Unmarshal(body, &p)
	rec.Event, rec.Type = p.Data, p.Type
	r.mu.Lock()
	n := len(r.got)
	r.got = append(r.got, rec)
	status := r.answer(n)
	r.got[n].Status = status
	r.mu.Unlock()
	if status == 0 {
		select {
		case <-r.hang:
		case <-req.Context().Done():
		}
		return
	}
	w.WriteHeader(status)
}

func (r *receiver) setAnswer(f func(n int) int) {
	r.mu.Lock()
	r.answer = f
	r.mu.Unlock()
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// verifySpec is the Standard Webhooks verification written from the
// specification, independent of the package's signer: the key is the
// base64 after "whsec_", the signed content "id.timestamp.body", and the
// header a space-separated list of "v1,<base64 HMAC-SHA256>".
func verifySpec(secret, id, ts string, body []byte, header string) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.%s", id, ts, body)
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(header) {
		v, b64, ok := strings.Cut(sig, ",")
		got, err := base64.StdEncoding.DecodeString(b64)
		if ok && v == "v1" && err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// rig is one test's database, store and deliverer.
type rig struct {
	pool  *pgxpool.Pool
	st    *store.Store
	d     *events.Deliverer
	clock *offsetClock
	obs   *countingObserver
}

type countingObserver struct {
	mu                          sync.Mutex
	delivered, retried, givenUp int
}

// counts reads the tallies under the lock.
func (o *countingObserver) counts() (delivered, retried, givenUp int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.delivered, o.retried, o.givenUp
}

func (o *countingObserver) EventDelivered(time.Duration) { o.mu.Lock(); o.delivered++; o.mu.Unlock() }
func (o *countingObserver) EventRetried(string)          { o.mu.Lock(); o.retried++; o.mu.Unlock() }
func (o *countingObserver) EventGivenUp()                { o.mu.Lock(); o.givenUp++; o.mu.Unlock() }

// startStream runs a Stream over st, woken by st's LISTEN connection as
// in serve, until the test ends.
func startStream(t *testing.T, st *store.Store) *events.Stream {
	t.Helper()
	s := events.NewStream(st, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go s.Run(ctx)
	go func() { _ = st.Listen(ctx, func(string, string) {}, func() {}, nil) }()
	return s
}

// newRig starts a deliverer posting to url (empty: no webhook) on a fresh
// database, or on dbURL when given (a second replica).
func newRig(t *testing.T, url, dbURL string, tweak func(*events.Config)) *rig {
	t.Helper()
	if dbURL == "" {
		dbURL = testdb.NewDatabase(t)
	}
	pool, err := store.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	r := &rig{pool: pool, clock: &offsetClock{}, obs: &countingObserver{}}
	r.st = store.New(pool, testkit.Keyring(t, testkit.KeySpec))
	cfg := events.Config{
		Pool: pool, Store: r.st, WebhookURL: url, WebhookSecret: crypto.Secret(secret),
		Now: r.clock.Now, Observer: r.obs, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Backoff:           func(int) time.Duration { return 100 * time.Millisecond },
		AttemptTimeout:    time.Second,
		FetchPollInterval: 100 * time.Millisecond,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	r.d, err = events.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.st.SetEventEnqueuer(r.d.EnqueueTx())
	if err := r.d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.d.Stop(ctx)
	})
	return r
}

func (r *rig) install(t *testing.T, acct int, creds string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := r.st.ApplyInstallEvent(ctx, store.InstallEvent{Type: store.TypeInstalled, IrisAppID: app,
		AccountID: account(acct), ClientID: crypto.Secret("id-" + creds), ClientSecret: crypto.Secret("secret-" + creds)})
	if err != nil {
		t.Fatal(err)
	}
}

func (r *rig) uninstall(t *testing.T, acct int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.st.ApplyInstallEvent(ctx, store.InstallEvent{Type: store.TypeUninstalled, IrisAppID: app,
		AccountID: account(acct)}); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) events(t *testing.T) []store.LifecycleEvent {
	t.Helper()
	evs, err := r.st.ListLifecycleEvents(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// offsetClock is real time plus an offset a test moves forward, since the
// database stamps events with its own clock.
type offsetClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}
