package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The resolved-series caches count into the same series the label values
// name, per listener, route, status and kind, and keep them apart.
func TestObserversCountIntoTheirSeries(t *testing.T) {
	m := New()
	pub, internal := m.HTTP("public"), m.HTTP("internal")
	for range 3 {
		internal.HTTPRequest("/irisx.broker.v1.TokenService/GetToken", "POST", 200, time.Millisecond)
	}
	internal.HTTPRequest("/irisx.broker.v1.TokenService/GetToken", "POST", 503, time.Millisecond)
	pub.HTTPRequest("/irisx.broker.v1.TokenService/GetToken", "POST", 200, time.Millisecond)
	m.CacheHit("install")
	m.CacheHit("install")
	m.CacheHit("api_key")
	m.CacheMiss("install")
	m.RefreshAhead("api_user")

	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"internal", "/irisx.broker.v1.TokenService/GetToken", "200"}, 3},
		{[]string{"internal", "/irisx.broker.v1.TokenService/GetToken", "503"}, 1},
		{[]string{"public", "/irisx.broker.v1.TokenService/GetToken", "200"}, 1},
	} {
		if got := testutil.ToFloat64(m.httpRequests.WithLabelValues(c.labels...)); got != c.want {
			t.Errorf("requests%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := testutil.CollectAndCount(m.httpDuration); got != 2 {
		t.Errorf("duration series = %d, want 2 (one per listener and route)", got)
	}
	for _, c := range []struct {
		result, kind string
		want         float64
	}{{"hit", "install", 2}, {"hit", "api_key", 1}, {"miss", "install", 1}, {"refresh_ahead", "api_user", 1}, {"hit", "api_user", 0}} {
		if got := testutil.ToFloat64(m.tokenCache.WithLabelValues(c.result, c.kind)); got != c.want {
			t.Errorf("token cache %s/%s = %v, want %v", c.result, c.kind, got, c.want)
		}
	}
}

// A request once seen costs no allocation to count.
func TestHotObserversDoNotAllocate(t *testing.T) {
	m := New()
	o := m.HTTP("internal")
	o.HTTPRequest("/r", "POST", 200, time.Millisecond)
	m.CacheHit("install")
	if n := testing.AllocsPerRun(100, func() {
		o.HTTPRequest("/r", "POST", 200, time.Millisecond)
		m.CacheHit("install")
	}); n != 0 {
		t.Fatalf("allocations per counted request = %v, want 0", n)
	}
}

func BenchmarkCachedRequestObservers(b *testing.B) {
	m := New()
	o := m.HTTP("internal")
	b.ReportAllocs()
	for b.Loop() {
		o.HTTPRequest("/irisx.broker.v1.TokenService/GetToken", "POST", 200, time.Millisecond)
		m.CacheHit("install")
	}
}
