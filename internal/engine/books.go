package engine

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
	"github.com/doorman/doorman/internal/throttle"
)

// Sources of a change, as the logs and events name them.
const (
	SourceFailures = "failures" // the webhook's failures
	SourceManual   = "manual"   // an operator, through the API
	SourceCluster  = "cluster"  // learned from another instance
)

// Counted does the bookkeeping of one failure counted in memory: metrics,
// the tracker eviction it may have caused, a ban the full table refused.
func (l *Local) Counted(res decide.FailResult, now time.Time) {
	l.m.Failures.Inc()
	if res.TrackerEvicted {
		l.m.EvictedTrack.Inc()
		l.evict.log(l, "failures", "", netip.Prefix{}, now)
	}
	if res.Refused {
		l.m.BansRefused.Inc()
		l.evict.log(l, "bans", "refused", res.Key, now)
	}
}

// Banned does the bookkeeping of a ban already in force in memory: the
// records evicted for it, its metric, the ban line, the state file (b and the
// evicted and folded keys as memory holds them now) and the observers. ip is
// the address or range the ban was made for, as logged. source is one of the
// Source constants. folded are the unit records a range ban replaced. An
// error wraps ErrNotSaved: the ban holds but was not written.
func (l *Local) Banned(ip string, b decide.Ban, evicted []decide.Ban, now time.Time, source string, folded ...decide.Ban) error {
	for _, e := range evicted {
		if e.Active(now) {
			l.m.EvictedBans.Inc()
			l.evict.log(l, "bans", "active", e.Key, now)
		} else {
			l.m.EvictedStale.Inc()
			l.evict.log(l, "bans", "expired", e.Key, now)
		}
	}
	switch {
	case source == SourceCluster:
	case b.Range:
		l.m.BansRange.Inc()
	case source == SourceFailures:
		l.m.BansFailures.Inc()
	case source == SourceManual:
		l.m.BansManual.Inc()
	}
	l.logBan(ip, b, now, source)
	keys := make([]netip.Prefix, 0, 1+len(evicted)+len(folded))
	keys = append(keys, b.Key)
	for _, e := range evicted {
		keys = append(keys, e.Key)
	}
	for _, f := range folded {
		keys = append(keys, f.Key)
		l.log.Info("folded into range ban", "key", f.Key.String(), "range", b.Key.String())
	}
	ev := Event{Time: now, Type: EventBan, Key: b.Key, IP: ip, Until: b.Until, Reason: b.Reason(), Count: b.Count, Source: source}
	err := l.persist(keys, ev)
	if err == nil {
		l.saved.add(b)
	}
	l.emit(ev)
	return err
}

// Lifted does the bookkeeping of bans already removed from memory: metrics,
// an unban line each, the state file and the observers. An error wraps
// ErrNotSaved.
func (l *Local) Lifted(ip string, lifted []decide.Ban, now time.Time, source string) error {
	if len(lifted) == 0 {
		return nil
	}
	keys := make([]netip.Prefix, 0, len(lifted))
	for _, b := range lifted {
		keys = append(keys, b.Key)
		l.m.Unbans.Inc()
		attrs := []any{"ip", ip, "key", b.Key.String(), "active", b.Active(now)}
		if source == SourceCluster {
			attrs = append(attrs, "source", source)
		}
		l.log.Info("unban", attrs...)
	}
	evs := make([]Event, len(lifted))
	for i, b := range lifted {
		evs[i] = Event{Time: now, Type: EventUnban, Key: b.Key, IP: ip, Until: b.Until, Reason: b.Reason(), Count: b.Count, Source: source}
	}
	err := l.persist(keys, evs...)
	for _, e := range evs {
		l.emit(e)
	}
	return err
}

// Saved returns once b, a ban in force in memory that an answer is about to
// report, is in the state file: a ban made by another call may still be on
// its way there. Bans known to be written return at once.
func (l *Local) Saved(b decide.Ban) error {
	if l.store == nil || l.saved.has(b) {
		return nil
	}
	if err := l.persist([]netip.Prefix{b.Key}); err != nil {
		return err
	}
	l.saved.add(b)
	return nil
}

// savedBans remembers the last bans known to be in the state file, so that
// a spray of failures inside one ban costs one write, not one each. Bounded:
// the least recently added is forgotten first (and written again if asked).
type savedBans struct {
	mu  sync.Mutex
	lru *simplelru.LRU[netip.Prefix, int64]
}

func newSavedBans(n int) savedBans {
	lru, _ := simplelru.NewLRU[netip.Prefix, int64](n, nil)
	return savedBans{lru: lru}
}

func (s *savedBans) add(b decide.Ban) {
	s.mu.Lock()
	s.lru.Add(b.Key, b.Until.UnixNano())
	s.mu.Unlock()
}

func (s *savedBans) has(b decide.Ban) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.lru.Peek(b.Key)
	return ok && u == b.Until.UnixNano()
}

// persist writes the records memory holds under keys (deleting those it no
// longer holds) and the history entries of evs, in one transaction, and
// fsyncs before returning.
func (l *Local) persist(keys []netip.Prefix, evs ...Event) error {
	if l.store == nil {
		return nil
	}
	var entries []store.Event
	if l.history != nil {
		entries = make([]store.Event, len(evs))
		for i, e := range evs {
			entries[i] = l.history.entry(e)
		}
	}
	if err := l.store.Sync(keys, l.core.Record, entries...); err != nil {
		l.m.StoreErrors.Inc()
		l.log.Error("state file write failed", "file", l.store.Path(), "err", err)
		return fmt.Errorf("%w: %v", ErrNotSaved, err)
	}
	return nil
}

// logBan writes the ban line that the shipped fail2ban filter matches:
// msg=ban ip=… key=… until=… failures=… at warn level. A change learned from
// the cluster says source=cluster.
func (l *Local) logBan(ip string, b decide.Ban, now time.Time, source string) {
	attrs := []any{"ip", ip, "key", b.Key.String(), "until", b.Until.Format(time.RFC3339),
		"failures", b.Failures, "count", b.Count, "reason", b.Reason(),
		"duration", b.Until.Sub(now).Round(time.Second).String()}
	if b.Note != "" {
		attrs = append(attrs, "note", b.Note)
	}
	if source == SourceCluster {
		attrs = append(attrs, "source", source)
	}
	l.log.Warn("ban", attrs...)
}

// evictionLog rate-limits the eviction warnings: at most one a minute per
// table and kind, with the number not logged since; under attack they come
// by the thousand.
type evictionLog struct{ t *throttle.Throttle }

func newEvictionLog() evictionLog { return evictionLog{throttle.New(time.Minute)} }

func (e evictionLog) log(l *Local, table, kind string, key netip.Prefix, now time.Time) {
	skipped, ok := e.t.Allow(table+"/"+kind, now)
	if !ok {
		return
	}
	attrs := []any{"table", table, "since_last_logged", skipped}
	if kind != "" {
		attrs = append(attrs, "kind", kind)
	}
	if key.IsValid() {
		attrs = append(attrs, "key", key.String())
	}
	msg := "eviction: table full, entry dropped"
	if kind == "refused" {
		msg = "ban not held: table full of active manual bans (DOORMAN_MAX_BANS)"
	}
	l.log.Warn(msg, attrs...)
}
