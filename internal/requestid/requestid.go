// Package requestid remembers the request ids of logins already counted, so
// that one login reported by two sources counts once: the app's webhook
// report ("request_id" in /v1/failures) and the proxy's learned record both
// carry nginx's $request_id, and whichever arrives first counts.
//
// A Seen is safe for concurrent use; make one with New. It is bounded: at
// most max ids, each for window; when full, the oldest is forgotten first
// (a forgotten id can count twice, never suppress a count it should not).
// Ids are kept as 16 bytes: nginx's 32 hex digits decoded, any other id
// hashed (SHA-256, truncated).
package requestid

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

// MaxLen is the longest id accepted; a longer one is not an id. It is
// api.MaxRequestID (TestMaxLen in internal/server holds them equal).
const MaxLen = 128

type key [16]byte

// Seen is the set of ids counted within the window.
type Seen struct {
	window time.Duration
	mu     sync.Mutex
	ids    map[key]int64 // first seen, Unix nanoseconds
	ring   []key         // insertion order, for eviction
	next   int           // ring slot of the next insertion
	full   bool
}

// New returns a Seen of at most max ids, each kept for window.
func New(max int, window time.Duration) *Seen {
	return &Seen{window: window, ids: make(map[key]int64, max), ring: make([]key, max)}
}

// First reports whether id is counted for the first time within the window
// at now, and remembers it. An empty id, or one over MaxLen, is always first
// and not remembered: there is nothing to match it with. It does not
// allocate.
func (s *Seen) First(id []byte, now time.Time) bool {
	if s == nil || len(id) == 0 || len(id) > MaxLen {
		return true
	}
	k := toKey(id)
	t := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.ids[k]; ok && t-at < int64(s.window) && t >= at {
		return false
	}
	if s.full {
		delete(s.ids, s.ring[s.next])
	}
	s.ids[k] = t
	s.ring[s.next] = k
	if s.next++; s.next == len(s.ring) {
		s.next, s.full = 0, true
	}
	return true
}

// Len is how many ids are remembered.
func (s *Seen) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

func toKey(id []byte) key {
	var k key
	if len(id) == 2*len(k) {
		if _, err := hex.Decode(k[:], id); err == nil {
			return k
		}
	}
	sum := sha256.Sum256(id)
	copy(k[:], sum[:16])
	k[0] ^= 0x80 // hashed ids apart from decoded ones (best effort)
	return k
}
