// Package minutes counts events per minute for the last hour, in a fixed ring
// of counters cheap enough for the decision path: Add is a load and a
// compare-and-swap on one word, allocates nothing and takes no lock.
//
// Invariants:
//   - A Ring holds Minutes slots per series, allocated once by New; its
//     memory never grows. A slot is reused for the minute an hour later.
//   - Each counter carries the minute it counts in its high bits, so a slot
//     is reset by the first Add of its new minute without any separate
//     reset step, and a reader never sees a count under the wrong minute.
//   - An Add for a minute older than the one a slot already holds is
//     dropped (a request that took over an hour); counts saturate at 2^40-1
//     per minute instead of overflowing into the minute.
//   - Time is passed in; the zero Ring is not usable; a Ring is safe for
//     concurrent use.
package minutes

import (
	"sync/atomic"
	"time"
)

// Minutes is how many minutes a Ring keeps: the current one and the 59
// before it.
const Minutes = 60

const (
	countBits = 40
	countMask = 1<<countBits - 1
	tagBits   = 64 - countBits
	tagMask   = 1<<tagBits - 1
)

// Ring is a per-minute counter for a fixed number of series.
type Ring struct {
	series int
	c      []atomic.Uint64 // [slot*series + s]: tag<<countBits | count
}

// New returns a Ring for series 0..series-1.
func New(series int) *Ring {
	return &Ring{series: series, c: make([]atomic.Uint64, Minutes*series)}
}

// minute is the Unix minute of t; floor, also before 1970.
func minute(t time.Time) int64 {
	s := t.Unix()
	m := s / 60
	if s%60 < 0 {
		m--
	}
	return m
}

func slot(m int64) int64 { return (m%Minutes + Minutes) % Minutes }

// Add counts n events of series s in the minute of now. A series out of
// range is ignored.
func (r *Ring) Add(s int, n uint64, now time.Time) {
	if uint(s) >= uint(r.series) {
		return
	}
	m := minute(now)
	tag := uint64(m) & tagMask
	c := &r.c[int(slot(m))*r.series+s]
	for {
		v := c.Load()
		var nv uint64
		switch old := v >> countBits; {
		case old == tag:
			nv = v + min(n, countMask-v&countMask)
		case (old-tag)&tagMask < 1<<(tagBits-1) && v != 0:
			return // the slot already holds a later minute
		default:
			nv = tag<<countBits | min(n, countMask)
		}
		if c.CompareAndSwap(v, nv) {
			return
		}
	}
}

// Last returns series s per minute for the hour up to now, oldest first: the
// last element is the current, unfinished minute.
func (r *Ring) Last(s int, now time.Time) [Minutes]uint64 {
	var out [Minutes]uint64
	if uint(s) >= uint(r.series) {
		return out
	}
	m := minute(now)
	for i := range Minutes {
		mi := m - Minutes + 1 + int64(i)
		v := r.c[int(slot(mi))*r.series+s].Load()
		if v>>countBits == uint64(mi)&tagMask {
			out[i] = v & countMask
		}
	}
	return out
}
