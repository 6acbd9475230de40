package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// maxOutbox bounds the unbans (and the unlocks) queued during an outage;
// past it the oldest is dropped (and logged): its ban or lock may come back
// from another instance.
const maxOutbox = 100_000

// pendingUnban is an unban (key: the ban's) or an unlock (key: the
// username) made here while Redis was unreachable.
type pendingUnban struct {
	until time.Time // of the ban or lock lifted locally
	at    time.Time // when it was lifted
	ip    string    // unbans: the address or range named
}

// outbox holds the unbans or unlocks to replay when Redis is back, one per
// key, oldest first; adding to a full outbox drops the oldest in O(1). Safe
// for concurrent use.
type outbox[K comparable] struct {
	mu      sync.Mutex
	q       *simplelru.LRU[K, pendingUnban]
	max     int
	dropped func(key K)
}

func newOutbox[K comparable](max int, dropped func(key K)) *outbox[K] {
	q, err := simplelru.NewLRU[K, pendingUnban](max, nil)
	if err != nil {
		panic(err) // max is a constant >= 1
	}
	return &outbox[K]{q: q, max: max, dropped: dropped}
}

// put queues the unban of k, replacing one queued for k before.
func (o *outbox[K]) put(k K, p pendingUnban) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.q.Contains(k) && o.q.Len() >= o.max {
		if old, _, ok := o.q.RemoveOldest(); ok {
			o.dropped(old)
		}
	}
	o.q.Add(k, p)
}

func (o *outbox[K]) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.q.Len()
}

// replay runs do for each queued unban, oldest first, removing those done. It
// stops at the first error; what was not replayed stays queued, unless a
// newer unban of the key was queued meanwhile. It returns how many were done.
func (o *outbox[K]) replay(ctx context.Context, do func(K, pendingUnban) error) (int, error) {
	o.mu.Lock()
	keys := o.q.Keys()
	items := make([]pendingUnban, len(keys))
	for i, k := range keys {
		items[i], _ = o.q.Peek(k)
	}
	o.mu.Unlock()
	done := 0
	for i, k := range keys {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		if err := do(k, items[i]); err != nil {
			return done, err
		}
		o.mu.Lock()
		if cur, ok := o.q.Peek(k); ok && cur.at.Equal(items[i].at) && cur.until.Equal(items[i].until) {
			o.q.Remove(k)
		}
		o.mu.Unlock()
		done++
	}
	return done, nil
}
