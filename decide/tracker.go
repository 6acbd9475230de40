package decide

import (
	"net/netip"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Tracker counts recent failures per ban unit in a sliding window. It is safe
// for concurrent use.
//
// Each unit keeps the times of at most limit recent failures (8 bytes each).
// Measured with one failure per unit: about 200 bytes of heap and 340–380
// bytes of RSS per unit, so the default 1M units stay under about 400 MB;
// each further remembered failure adds 8–16 bytes. Bound and eviction
// rule: at most max units; a failure for a new unit in a full tracker drops the
// unit whose last failure is the oldest.
type Tracker struct {
	mu    sync.Mutex
	lru   *simplelru.LRU[pkey, []int64]
	limit int
	max   int
}

// NewTracker returns a tracker for at most max units, each remembering at most
// limit failures (max, limit >= 1).
func NewTracker(max, limit int) *Tracker {
	lru, err := simplelru.NewLRU[pkey, []int64](max, nil)
	if err != nil {
		panic(err) // only for max < 1, which config validation rules out
	}
	return &Tracker{lru: lru, limit: limit, max: max}
}

// Add records a failure of key at now (unix nanoseconds), forgets those at or
// before now-window, and returns how many remain. evicted is true when another
// unit had to be dropped to make room.
func (t *Tracker) Add(key netip.Prefix, now, window int64) (count int, evicted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	times, ok := t.lru.Get(keyOf(key))
	if !ok && t.lru.Len() >= t.max {
		t.lru.RemoveOldest()
		evicted = true
	}
	cut := 0
	for cut < len(times) && times[cut] <= now-window {
		cut++
	}
	times = append(times[:0], times[cut:]...)
	if len(times) == t.limit {
		times = append(times[:0], times[1:]...)
	}
	times = append(times, now)
	t.lru.Add(keyOf(key), times)
	return len(times), evicted
}

// Count returns the failures of key within window before now.
func (t *Tracker) Count(key netip.Prefix, now, window int64) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	times, _ := t.lru.Peek(keyOf(key))
	n := 0
	for _, ts := range times {
		if ts > now-window {
			n++
		}
	}
	return n
}

// Reset forgets the failures of key.
func (t *Tracker) Reset(key netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lru.Remove(keyOf(key))
}

// Len returns the number of units tracked.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}
