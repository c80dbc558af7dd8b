package token

import (
	"context"
	"testing"
	"time"
)

// BenchmarkTokenCached measures the hot path: a cached token, many
// goroutines, scopes already normalized.
func BenchmarkTokenCached(b *testing.B) {
	st := newFakeStore()
	up := newUpstream(b, time.Now)
	st.sim = up.sim
	br, err := New(Config{AuthURL: up.url, DefaultScopes: []string{"account.view", "asset.view"}}, st)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	r := Request{IrisAppID: testApp, AccountID: "6b5cb246-7945-4bb6-bec5-2a1413ffd1b3"}
	st.install(testApp, r.AccountID, testSecret)
	if _, err := br.Token(ctx, r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := br.Token(ctx, r); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
