// Package throttle says "at most once per interval, with how many since": the
// rule every rate-limited warning in doorman follows. Under attack warnings
// come by the thousand; one line per interval with the count of the others
// keeps the log readable and cheap.
//
// A Throttle is safe for use by several goroutines; its zero value is not
// usable (the interval must be set): make one with New. Keys must come from a
// fixed set chosen by the caller (a table and kind, a receiver URL), never
// from input, so the per-key state stays bounded by that set.
package throttle

import (
	"sync"
	"time"
)

// Throttle lets one event per key through per interval.
type Throttle struct {
	every time.Duration
	mu    sync.Mutex
	keys  map[string]*window
}

type window struct {
	last    time.Time
	skipped int
}

// New returns a Throttle that lets one event per key through every interval.
func New(every time.Duration) *Throttle {
	return &Throttle{every: every, keys: map[string]*window{}}
}

// Allow reports whether an event for key at now may be logged, and how many
// events for key were held back since the last one allowed. The first event
// of a key is always allowed.
func (t *Throttle) Allow(key string, now time.Time) (skipped int, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.keys[key]
	if w == nil {
		w = &window{}
		t.keys[key] = w
	} else if now.Sub(w.last) < t.every {
		w.skipped++
		return 0, false
	}
	skipped, w.last, w.skipped = w.skipped, now, 0
	return skipped, true
}
