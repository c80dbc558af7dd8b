package api_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/irisx-broker/irisx-broker/store"
)

func TestAdminLifecycleEventsAndRedeliver(t *testing.T) {
	t.Parallel()
	h := newEventsHarness(t, true)
	h.st.SetEventEnqueuer(func(context.Context, pgx.Tx, store.InstallKey) error { return nil })
	const acct = "6f1c0e9a-1b2c-4d3e-8f40-000000000001"
	h.install(t, acct)
	evs, _ := h.st.ListLifecycleEvents(context.Background(), 0, 10)
	// Mark it delivered, as the worker would.
	key := store.InstallKey{IrisAppID: evs[0].IrisAppID, AccountID: evs[0].AccountID}
	if _, err := h.st.MarkDeliveredFinishIfIdle(context.Background(), key, evs[0].Seq, evs[0].OccurredAt,
		func(pgx.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(password string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/admin/install/events?irisAppId=@acme/app&accountId="+acct, nil)
		req.SetBasicAuth("op", password)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d", code)
	}
	code, page := get(adminToken)
	if code != http.StatusOK || !strings.Contains(page, evs[0].ID()) || !strings.Contains(page, "delivered") {
		t.Fatalf("page %d: %s", code, page)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if csrf == nil {
		t.Fatal("no redeliver form with a CSRF token")
	}
	post := func(csrf string, hdr map[string]string) int {
		form := url.Values{"csrf": {csrf}, "id": {evs[0].ID()}, "irisAppId": {"@acme/app"}, "accountId": {acct}}
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/admin/events/redeliver", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		req.SetBasicAuth("op", adminToken)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	state := func() string {
		ev, err := h.st.LifecycleEvent(context.Background(), evs[0].Seq)
		if err != nil {
			t.Fatal(err)
		}
		return ev.DeliveryState
	}
	for name, c := range map[string]struct {
		csrf string
		hdr  map[string]string
	}{
		"no token":         {"", nil},
		"wrong token":      {"forged", nil},
		"cross-site fetch": {csrf[1], map[string]string{"Sec-Fetch-Site": "cross-site"}},
		"foreign origin":   {csrf[1], map[string]string{"Origin": "https://evil.example"}},
	} {
		if code := post(c.csrf, c.hdr); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, code)
		}
		if s := state(); s != store.DeliveryDelivered {
			t.Errorf("%s: state %q after a refused redelivery", name, s)
		}
	}
	if code := post(csrf[1], nil); code != http.StatusSeeOther {
		t.Fatalf("redeliver: %d, want 303", code)
	}
	if s := state(); s != store.DeliveryPending {
		t.Errorf("state %q after redelivery, want pending", s)
	}
}
