package token

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"
)

// entry is one cached token. Everything but heapIdx (guarded by cache.mu)
// and the atomics is immutable once the entry is in the cache, so readers
// use it without the lock.
type entry struct {
	key     string // app NUL account NUL scopes
	install string // app NUL account, a prefix of key
	app     string
	account string
	scopes  []string // requested, normalized; owned by the entry
	tok     Token
	version int64 // of the credentials the token was minted with
	// nextRefresh (unix nanoseconds) is when a hit starts a background
	// refresh; pushed back after a failed one so an outage is not hammered.
	nextRefresh atomic.Int64
	refreshing  atomic.Bool
	// checked (unix nanoseconds) is when the token was last known to be
	// its credential's current one (Config.Revalidate).
	checked atomic.Int64
	heapIdx int
}

// cache holds the tokens, an index by install for Invalidate, a min-heap by
// expiry for eviction, and the epochs that let Invalidate win over fetches
// in flight.
type cache struct {
	mu        sync.RWMutex
	max       int
	entries   map[string]*entry
	byInstall map[string]map[*entry]struct{}
	heap      entryHeap

	// epoch counts invalidations. A fetch notes the epoch before it reads
	// credentials; its result is stale if the install was invalidated at a
	// later epoch, or if floor (set by InvalidateAll and by pruning
	// invalidated) moved past it.
	epoch       uint64
	floor       uint64
	invalidated map[string]uint64
}

// maxInvalidated bounds the invalidated map; past it, the map is cleared
// and floor raised, which at worst restarts a few unaffected fetches.
const maxInvalidated = 10_000

func newCache(maxEntries int) *cache {
	return &cache{
		max:         maxEntries,
		entries:     make(map[string]*entry),
		byInstall:   make(map[string]map[*entry]struct{}),
		invalidated: make(map[string]uint64),
	}
}

// get looks key up; string(key) in the index expression does not allocate.
func (c *cache) get(key []byte) *entry {
	c.mu.RLock()
	e := c.entries[string(key)]
	c.mu.RUnlock()
	return e
}

func (c *cache) peek(key string) *entry {
	c.mu.RLock()
	e := c.entries[key]
	c.mu.RUnlock()
	return e
}

// currentEpoch is noted by a fetch before it reads credentials.
func (c *cache) currentEpoch() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.epoch
}

func (c *cache) stale(install string, start uint64) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.staleLocked(install, start)
}

func (c *cache) staleLocked(install string, start uint64) bool {
	return c.floor > start || c.invalidated[install] > start
}

// put caches e unless its install was invalidated after start, replacing
// the key's previous entry and evicting to stay within max: expired entries
// first, then the soonest to expire. It reports whether e was cached.
func (c *cache) put(e *entry, start uint64, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.staleLocked(e.install, start) {
		return false
	}
	if old := c.entries[e.key]; old != nil {
		c.removeLocked(old)
	}
	for len(c.heap) > 0 && (len(c.entries) >= c.max || !c.heap[0].tok.ExpiresAt.After(now)) {
		c.removeLocked(c.heap[0])
	}
	c.entries[e.key] = e
	set := c.byInstall[e.install]
	if set == nil {
		set = make(map[*entry]struct{}, 1)
		c.byInstall[e.install] = set
	}
	set[e] = struct{}{}
	heap.Push(&c.heap, e)
	return true
}

func (c *cache) removeLocked(e *entry) {
	delete(c.entries, e.key)
	if set := c.byInstall[e.install]; set != nil {
		delete(set, e)
		if len(set) == 0 {
			delete(c.byInstall, e.install)
		}
	}
	heap.Remove(&c.heap, e.heapIdx)
}

// drop removes the entry for key, if any, without touching epochs.
func (c *cache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[key]; e != nil {
		c.removeLocked(e)
	}
}

// dropInstall removes the install's entries without touching epochs.
func (c *cache) dropInstall(install string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropInstallLocked(install)
}

func (c *cache) dropInstallLocked(install string) {
	for e := range c.byInstall[install] {
		c.removeLocked(e)
	}
}

func (c *cache) invalidate(install string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	if len(c.invalidated) >= maxInvalidated {
		// Every fetch that started before now is treated as stale, so the
		// older per-install epochs are no longer needed.
		c.floor = c.epoch - 1
		clear(c.invalidated)
	}
	c.invalidated[install] = c.epoch
	c.dropInstallLocked(install)
}

func (c *cache) invalidateAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.floor = c.epoch
	clear(c.invalidated)
	clear(c.entries)
	clear(c.byInstall)
	c.heap = nil
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// entryHeap is a container/heap min-heap ordered by expiry.
type entryHeap []*entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].tok.ExpiresAt.Before(h[j].tok.ExpiresAt) }
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.heapIdx = len(*h)
	*h = append(*h, e)
}

func (h *entryHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	e.heapIdx = -1
	return e
}
