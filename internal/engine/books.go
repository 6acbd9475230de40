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

// persist writes the ban records memory holds under keys and the account
// records of users (deleting those it no longer holds) and the history
// entries of evs, in one transaction, and fsyncs before returning.
func (l *Local) persist(keys []netip.Prefix, users []string, evs []Event, now time.Time) error {
	if l.store == nil {
		return nil
	}
	w := store.Write{Keys: keys, Ban: l.core.Record, Users: users}
	if l.history != nil {
		w.Events = make([]store.Event, len(evs))
		for i, e := range evs {
			w.Events[i] = l.history.entry(e)
		}
	}
	if len(users) > 0 {
		w.Lock = l.accounts.current(now)
	}
	if err := l.store.Write(w); err != nil {
		l.m.StoreErrors.Inc()
		l.log.Error("state file write failed", "file", l.store.Path(), "err", err)
		return fmt.Errorf("%w: %v", ErrNotSaved, err)
	}
	return nil
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
