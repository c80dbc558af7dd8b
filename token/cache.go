package token

import (
	"container/heap"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// entry is one cached token. Everything but heapIdx and the install list
// links (guarded by cache.mu) and the atomics is immutable once the entry
// is in the cache, so readers use it without the lock.
//
// A broker may hold an entry for each of 100,000 installs, so an entry
// keeps no string but its key: the app, account and install are substrings
// of it, the requested scopes are rebuilt from it when a refresh needs
// them, and the token's scopes share the request's slice when the upstream
// granted what was asked.
type entry struct {
	key string // app NUL account NUL scopes
	// appLen and installLen cut the app (key[:appLen]) and the install
	// (app NUL account, key[:installLen]) out of key.
	appLen, installLen int32
	heapIdx            int32
	tok                Token
	version            int64 // of the credentials the token was minted with
	// nextRefresh (unix nanoseconds) is when a hit starts a background
	// refresh; pushed back after a failed one so an outage is not hammered.
	nextRefresh atomic.Int64
	// checked (unix nanoseconds) is when the token was last known to be
	// its credential's current one (Config.Revalidate).
	checked    atomic.Int64
	refreshing atomic.Bool
	// prev and next link the install's entries, headed by
	// cache.byInstall; most installs have one.
	prev, next *entry
}

// newEntryFor is an empty entry for f's key; f.install and f.app are
// prefixes of f.key.
func newEntryFor(f fetchReq) *entry {
	return &entry{key: f.key, appLen: int32(len(f.app)), installLen: int32(len(f.install))}
}

func (e *entry) install() string { return e.key[:e.installLen] }
func (e *entry) app() string     { return e.key[:e.appLen] }
func (e *entry) account() string { return e.key[e.appLen+1 : e.installLen] }

// scopes are the requested scopes, as appendKey joined them into the key
// (nil when none were).
func (e *entry) scopes() []string {
	if int(e.installLen)+1 >= len(e.key) {
		return nil
	}
	return strings.Split(e.key[e.installLen+1:], " ")
}

// cache holds the tokens, an index by install for Invalidate, a min-heap by
// expiry for eviction, and the epochs that let Invalidate win over fetches
// in flight.
type cache struct {
	mu      sync.RWMutex
	max     int
	entries map[string]*entry
	// byInstall heads each install's list of entries; the map's key is
	// the head's install substring.
	byInstall map[string]*entry
	heap      entryHeap

	// epoch counts invalidations. A fetch notes the epoch before it reads
	// credentials; its result is stale if the install was invalidated at a
	// later epoch, or if floor (set by InvalidateAll and by pruning
	// invalidated) moved past it.
	epoch       uint64
	floor       uint64
	invalidated map[string]uint64

	// scopeSets interns the scope sets tokens were granted, in the
	// upstream's order: most installs are granted the same few, which
	// then take no memory of their own.
	scopeSets map[string][]string
}

// maxScopeSets bounds scopeSets; sets past it are kept by their entries
// alone.
const maxScopeSets = 64

// maxInvalidated bounds the invalidated map; past it, the map is cleared
// and floor raised, which at worst restarts a few unaffected fetches.
const maxInvalidated = 10_000

func newCache(maxEntries int) *cache {
	return &cache{
		max:         maxEntries,
		entries:     make(map[string]*entry),
		byInstall:   make(map[string]*entry),
		invalidated: make(map[string]uint64),
		scopeSets:   make(map[string][]string),
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
	if c.staleLocked(e.install(), start) {
		return false
	}
	if old := c.entries[e.key]; old != nil {
		c.removeLocked(old)
	}
	for len(c.heap) > 0 && (len(c.entries) >= c.max || !c.heap[0].tok.ExpiresAt.After(now)) {
		c.removeLocked(c.heap[0])
	}
	e.tok.Scopes = c.internLocked(e.tok.Scopes)
	c.entries[e.key] = e
	if head := c.byInstall[e.install()]; head == nil {
		c.byInstall[e.install()] = e
	} else {
		// Linked in after the head, so the map's key stays the head's.
		e.prev, e.next = head, head.next
		if head.next != nil {
			head.next.prev = e
		}
		head.next = e
	}
	heap.Push(&c.heap, e)
	return true
}

// internLocked returns the interned copy of scopes, interning them while
// there is room. The slices are never modified, like every entry's.
func (c *cache) internLocked(scopes []string) []string {
	var buf [256]byte
	k := buf[:0]
	for _, s := range scopes {
		k = append(k, s...)
		k = append(k, ' ')
	}
	if set, ok := c.scopeSets[string(k)]; ok {
		return set
	}
	if len(c.scopeSets) < maxScopeSets {
		c.scopeSets[string(k)] = scopes
	}
	return scopes
}

func (c *cache) removeLocked(e *entry) {
	delete(c.entries, e.key)
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		// e heads the list: the map's key is e's, so it is deleted and the
		// next entry, if any, enters under its own.
		delete(c.byInstall, e.install())
		if e.next != nil {
			c.byInstall[e.next.install()] = e.next
		}
	}
	if e.next != nil {
		e.next.prev = e.prev
	}
	e.prev, e.next = nil, nil
	heap.Remove(&c.heap, int(e.heapIdx))
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
	for e := c.byInstall[install]; e != nil; {
		next := e.next
		c.removeLocked(e)
		e = next
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
	h[i].heapIdx = int32(i)
	h[j].heapIdx = int32(j)
}

func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.heapIdx = int32(len(*h))
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
