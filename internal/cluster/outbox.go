package cluster

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// maxOutbox bounds the unbans queued during an outage; past it the oldest
// is dropped (and logged): its ban may come back from another instance.
const maxOutbox = 100_000

// pendingUnban is an unban made here while Redis was unreachable.
type pendingUnban struct {
	until time.Time // of the ban lifted locally
	at    time.Time // when it was lifted
	ip    string
}

// outbox holds the unbans to replay when Redis is back, one per key, oldest
// first; adding to a full outbox drops the oldest in O(1). Safe for
// concurrent use.
type outbox struct {
	mu      sync.Mutex
	q       *simplelru.LRU[netip.Prefix, pendingUnban]
	max     int
	dropped func(key string)
}

func newOutbox(max int, dropped func(key string)) *outbox {
	q, err := simplelru.NewLRU[netip.Prefix, pendingUnban](max, nil)
	if err != nil {
		panic(err) // max is a constant >= 1
	}
	return &outbox{q: q, max: max, dropped: dropped}
}

// put queues the unban of k, replacing one queued for k before.
func (o *outbox) put(k netip.Prefix, p pendingUnban) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.q.Contains(k) && o.q.Len() >= o.max {
		if old, _, ok := o.q.RemoveOldest(); ok {
			o.dropped(old.String())
		}
	}
	o.q.Add(k, p)
}

func (o *outbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.q.Len()
}

// replay runs do for each queued unban, oldest first, removing those done. It
// stops at the first error; what was not replayed stays queued, unless a
// newer unban of the key was queued meanwhile. It returns how many were done.
func (o *outbox) replay(ctx context.Context, do func(netip.Prefix, pendingUnban) error) (int, error) {
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
