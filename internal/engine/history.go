package engine

import (
	"sync"

	"github.com/doorman/doorman/internal/store"
)

// HistoryEntry is one entry of the event history, as the state file keeps it.
type HistoryEntry = store.Event

// Event kinds beyond the Event types: a change of a ban held under a range
// rather than a ban unit.
const (
	KindRangeBan   = "range_" + EventBan
	KindRangeUnban = "range_" + EventUnban
)

// kind is e's Kind: ban or unban for a ban unit, range_ban or range_unban
// for a range (a manual CIDR ban, a range escalation), else e's type.
func (l *Local) kind(e Event) string {
	if e.Key.IsValid() && l.core.Unit(e.Key.Addr()) != e.Key {
		return "range_" + e.Type
	}
	return e.Type
}

// History keeps the last max change events of a Local: in the state file
// when there is one, so they survive restarts, else in memory. It is safe
// for concurrent use.
type History struct {
	l   *Local
	max int

	mu   sync.Mutex
	ring []HistoryEntry // memory only: the last max entries, ring[next-1] newest
	next int
}

// NewHistory returns the history of at most max entries and registers it as
// an observer of l's events: call it before serving. max 0 or less keeps
// nothing.
func (l *Local) NewHistory(max int) *History {
	h := &History{l: l, max: max}
	if max > 0 {
		l.history = h
		l.OnEvent(h.record)
	}
	if l.store != nil {
		l.store.KeepEvents(max)
	}
	return h
}

// entry is the history entry of e.
func (h *History) entry(e Event) HistoryEntry {
	he := HistoryEntry{Time: e.Time.UTC(), Type: h.l.kind(e), Key: e.Subject(), Reason: e.Reason, Source: e.Source, Count: e.Count}
	if e.Type == EventBan || e.Type == EventLock {
		he.Until = e.Until.UTC()
	}
	return he
}

// record keeps one event in memory; with a state file, every event was
// written with its change, in its transaction (Local.commit).
func (h *History) record(e Event) {
	if h.l.store != nil {
		return
	}
	he := h.entry(e)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ring) < h.max {
		h.ring = append(h.ring, he)
		h.next = len(h.ring) % h.max
		return
	}
	h.ring[h.next] = he
	h.next = (h.next + 1) % h.max
}

// Last returns up to limit entries, newest first.
func (h *History) Last(limit int) ([]HistoryEntry, error) {
	limit = min(limit, h.max)
	if limit <= 0 {
		return nil, nil
	}
	if h.l.store != nil {
		return h.l.store.Events(limit)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.ring)
	out := make([]HistoryEntry, 0, min(limit, n))
	for i := 1; i <= n && len(out) < limit; i++ {
		out = append(out, h.ring[((h.next-i)%n+n)%n])
	}
	return out, nil
}

// Max is the number of entries kept.
func (h *History) Max() int { return h.max }
