package client

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1"
	"github.com/irisx-broker/irisx-broker/api/gen/irisx/broker/v1/brokerv1connect"
)

// fakeEvents holds events 1..n and cuts every stream after two events.
type fakeEvents struct {
	brokerv1connect.UnimplementedEventServiceHandler
	n      int
	mu     sync.Mutex
	starts []string // afterId of each WatchEvents call
	auth   []string
}

func fakeID(i int) string { return fmt.Sprintf("evt_%019d", i) }

func (f *fakeEvents) WatchEvents(ctx context.Context, req *connect.Request[brokerv1.WatchEventsRequest], s *connect.ServerStream[brokerv1.WatchEventsResponse]) error {
	f.mu.Lock()
	f.starts = append(f.starts, req.Msg.AfterId)
	f.auth = append(f.auth, req.Header().Get("Authorization"))
	f.mu.Unlock()
	sent := 0
	for i := 1; i <= f.n && sent < 2; i++ {
		if id := fakeID(i); id > req.Msg.AfterId {
			if err := s.Send(&brokerv1.WatchEventsResponse{Event: &brokerv1.Event{Id: id, Type: "install.installed", OccurredAt: timestamppb.Now()}}); err != nil {
				return err
			}
			sent++
		}
	}
	return connect.NewError(connect.CodeUnavailable, errors.New("replica going away"))
}

func TestWatchEventsReconnectsAndResumes(t *testing.T) {
	f := &fakeEvents{n: 7}
	srv := httptest.NewServer(http.StripPrefix("", func() http.Handler {
		_, h := brokerv1connect.NewEventServiceHandler(f)
		return h
	}()))
	defer srv.Close()
	e := NewEvents(srv.URL, "tok")
	e.sleep = func(context.Context, time.Duration) error { return nil }
	var got []string
	done := errors.New("done")
	err := e.WatchEvents(context.Background(), fakeID(1), func(ev Event) error {
		got = append(got, ev.ID)
		if len(got) == 6 {
			return done
		}
		return nil
	})
	if !errors.Is(err, done) {
		t.Fatalf("WatchEvents = %v, want fn's error", err)
	}
	for i, id := range got {
		if id != fakeID(i+2) {
			t.Fatalf("events %v: gap or duplicate at %d", got, i)
		}
	}
	if want := []string{fakeID(1), fakeID(3), fakeID(5)}; fmt.Sprint(f.starts) != fmt.Sprint(want) {
		t.Errorf("resumed from %v, want %v", f.starts, want)
	}
	if f.auth[0] != "Bearer tok" {
		t.Errorf("Authorization %q", f.auth[0])
	}
}

func TestWatchEventsStopsOnRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"code":"unauthenticated","message":"no"}`))
	}))
	defer srv.Close()
	e := NewEvents(srv.URL, "wrong")
	e.sleep = func(context.Context, time.Duration) error { return nil }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := e.WatchEvents(ctx, "", func(Event) error { return nil })
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("WatchEvents = %v, want unauthenticated", err)
	}
}

// The Standard Webhooks specification's test vector verifies; tampering,
// a wrong secret and an old timestamp do not.
func TestVerifyWebhook(t *testing.T) {
	const (
		secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		id     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		ts     = 1614265330
	)
	specBody := []byte(`{"test": 2432232314}`)
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.Itoa(ts))
	h.Set("webhook-signature", "v2,abc v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	at := time.Unix(ts, 0).Add(time.Minute)
	key, _ := base64.StdEncoding.DecodeString(secret[len("whsec_"):])
	if !signatureMatches(key, id, strconv.Itoa(ts), specBody, h.Get("webhook-signature")) {
		t.Fatal("the specification's test vector does not verify")
	}
	// The vector's body is not an event: the signature passes, the body
	// is then refused.
	if _, err := verifyWebhookAt(secret, h, specBody, at); err == nil || errors.Is(err, ErrWebhookSignature) && !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("spec vector through VerifyWebhook: %v", err)
	}
	// A real event body signed the same way verifies and parses.
	evBody := []byte(`{"type":"install.installed","timestamp":"2021-02-25T15:02:10Z","data":{"id":"evt_0000000000000000001","type":"install.installed","occurredAt":"2021-02-25T15:02:10Z","irisAppId":"@a/b","accountId":"x","status":"installed"}}`)
	eh := http.Header{}
	eh.Set("webhook-id", "evt_0000000000000000001")
	eh.Set("webhook-timestamp", strconv.Itoa(ts))
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "evt_0000000000000000001.%d.%s", ts, evBody)
	eh.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	if ev, err := verifyWebhookAt(secret, eh, evBody, at); err != nil || ev.ID != "evt_0000000000000000001" || ev.Status != "installed" {
		t.Fatalf("signed event: %+v, %v", ev, err)
	}
	if _, err := verifyWebhookAt(secret, h, []byte(`{"test": 2432232315}`), at); !errors.Is(err, ErrWebhookSignature) {
		t.Errorf("tampered body: %v", err)
	}
	if _, err := verifyWebhookAt("whsec_"+"AAAAAAAAAAAAAAAAAAAAAAAA", h, specBody, at); !errors.Is(err, ErrWebhookSignature) {
		t.Errorf("wrong secret: %v", err)
	}
	if _, err := verifyWebhookAt(secret, h, specBody, time.Unix(ts, 0).Add(6*time.Minute)); !errors.Is(err, ErrWebhookSignature) {
		t.Errorf("old timestamp: %v", err)
	}
}
