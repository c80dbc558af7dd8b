package events

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/irisx-broker/irisx-broker/store"
)

// Poll intervals of a watcher: a notification wakes it at once; polling
// only bounds the delay of a missed one.
const (
	pollConnected    = 5 * time.Second
	pollDisconnected = time.Second
	watchPage        = 1000
	// latestPoll: how often each replica reads the latest event id, so a
	// missed notification (or a previous release's replica numbering
	// without one during a rolling deploy) only delays.
	latestPoll = 250 * time.Millisecond
)

// Stream serves WatchEvents: it runs the replica's Sequencer, hears of
// the batches of newly numbered events (any replica's) on the store's
// LISTEN connection and wakes every watcher, which then reads what follows
// its last id. Ids are assigned in commit order and readers see numbered
// events only, so reading "after the last id seen" has no gap and no
// duplicate.
type Stream struct {
	st        *store.Store
	log       *slog.Logger
	connected atomic.Bool
	seq       *Sequencer

	mu   sync.Mutex
	wake chan struct{} // closed and replaced on each notification
}

// NewStream returns a Stream reading st. It registers with
// st.SetEventsListener, so st.Listen (the replica's one LISTEN connection,
// on DATABASE_DIRECT_URL) wakes its watchers; call it before st.Listen.
// Run must be running for prompt numbering; without Run and Listen
// watchers still poll (and every read numbers what is committed first).
func NewStream(st *store.Store, logger *slog.Logger) *Stream {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Stream{st: st, log: logger, wake: make(chan struct{})}
	s.seq = NewSequencer(st, logger, s.notify)
	st.SetEventsListener(s)
	return s
}

// Run numbers events and polls the latest id, until ctx ends.
func (s *Stream) Run(ctx context.Context) {
	go s.seq.Run(ctx)
	s.pollLatest(ctx)
}

// EventsNumbered implements store.EventsListener.
func (s *Stream) EventsNumbered() { s.notify() }

// EventsListening implements store.EventsListener: while the connection
// is lost watchers poll more often; once it is back they read at once, as
// notifications may have been missed meanwhile.
func (s *Stream) EventsListening(ok bool) {
	s.connected.Store(ok)
	if ok {
		s.notify()
	}
}

func (s *Stream) notify() {
	s.mu.Lock()
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
}

func (s *Stream) waiter() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wake
}

// Watch calls fn for every event after afterSeq, in id order, then for each
// new one as it commits, until ctx ends or fn or the database fails.
func (s *Stream) Watch(ctx context.Context, afterSeq int64, fn func(store.LifecycleEvent) error) error {
	for {
		wake := s.waiter() // taken before reading, so no write slips between
		evs, err := s.st.ListLifecycleEvents(ctx, afterSeq, watchPage)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := fn(ev); err != nil {
				return err
			}
			afterSeq = ev.Seq
		}
		if len(evs) == watchPage {
			continue
		}
		poll := pollDisconnected
		if s.connected.Load() {
			poll = pollConnected
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// pollLatest wakes the watchers when the latest id grows: one indexed
// read per replica every latestPoll, whatever the number of watchers.
func (s *Stream) pollLatest(ctx context.Context) {
	last := int64(-1) // unknown: the first read only sets it
	t := time.NewTicker(latestPoll)
	defer t.Stop()
	for {
		seq, err := s.st.LatestEventSeq(ctx)
		if err == nil && seq > last {
			if last >= 0 {
				s.notify()
			}
			last = seq
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
