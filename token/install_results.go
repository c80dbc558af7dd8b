package token

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/irisx-broker/irisx-broker/store"
)

// maxBatch is the most results Run holds before writing without waiting
// for the next tick.
const maxBatch = 1000

// record queues an install's token outcome for Run. It never blocks: when
// the buffer is full the result is dropped (and counted), because losing a
// lastTokenAt is better than slowing a token request.
func (b *Broker) record(f fetchReq, lastError string) {
	r := store.TokenResult{IrisAppID: f.app, AccountID: f.account, At: b.now(), LastError: lastError}
	select {
	case b.results <- r:
	default:
		b.dropped.Add(1)
	}
}

// Run writes token results (lastTokenAt / lastError) to the store until ctx
// ends, then writes what it still holds. Results are coalesced per install,
// the latest winning, and written in batches every FlushInterval. Call it
// once, in its own goroutine.
func (b *Broker) Run(ctx context.Context) {
	tick := time.NewTicker(b.flushInterval)
	defer tick.Stop()
	pending := make(map[string]store.TokenResult)
	for {
		select {
		case r := <-b.results:
			merge(pending, r)
			if len(pending) >= maxBatch {
				b.flush(ctx, pending)
			}
		case <-tick.C:
			b.flush(ctx, pending)
		case <-ctx.Done():
			for drained := false; !drained; {
				select {
				case r := <-b.results:
					merge(pending, r)
				default:
					drained = true
				}
			}
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			b.flush(fctx, pending)
			cancel()
			return
		}
	}
}

func merge(pending map[string]store.TokenResult, r store.TokenResult) {
	k := r.IrisAppID + "\x00" + r.AccountID
	if old, ok := pending[k]; ok && old.At.After(r.At) {
		return
	}
	pending[k] = r
}

func (b *Broker) flush(ctx context.Context, pending map[string]store.TokenResult) {
	if n := b.dropped.Swap(0); n > 0 {
		b.log.LogAttrs(ctx, slog.LevelWarn, "token results dropped: buffer full", slog.Int64("dropped", n))
	}
	if len(pending) == 0 {
		return
	}
	batch := make([]store.TokenResult, 0, len(pending))
	for _, r := range pending {
		batch = append(batch, r)
	}
	clear(pending)
	// A stable order keeps concurrent writers from deadlocking on rows.
	slices.SortFunc(batch, func(a, c store.TokenResult) int {
		return cmp.Or(cmp.Compare(a.IrisAppID, c.IrisAppID), cmp.Compare(a.AccountID, c.AccountID))
	})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.st.RecordTokenResults(wctx, batch); err != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "recording token results failed", slog.Int("results", len(batch)), slog.Any("error", err))
	}
}
