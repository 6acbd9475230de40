package engine

import "net/netip"

// LearnedKeys holds, for a hook's Run, the keys of changes learned from the
// cluster (Source SourceCluster), which no caller waits for. It is bounded:
// Put reports false when it is full, and the hook says what that costs.
type LearnedKeys chan netip.Prefix

// NewLearnedKeys returns a queue of n keys at most.
func NewLearnedKeys(n int) LearnedKeys { return make(LearnedKeys, n) }

// Put queues k, or reports false when the queue is full.
func (q LearnedKeys) Put(k netip.Prefix) bool {
	select {
	case q <- k:
		return true
	default:
		return false
	}
}

// Batch is first (just received from q) and the keys queued behind it,
// max in all, taken without waiting.
func (q LearnedKeys) Batch(first netip.Prefix, max int) []netip.Prefix {
	batch := []netip.Prefix{first}
	for len(batch) < max {
		select {
		case k := <-q:
			batch = append(batch, k)
		default:
			return batch
		}
	}
	return batch
}
