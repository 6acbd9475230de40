package decide

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"
	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Ban is one ban record as the API, the store and the logs see it.
type Ban struct {
	Key      netip.Prefix
	Until    time.Time
	Manual   bool   // set by an operator, not by failures
	Note     string // the operator's reason, for manual bans
	Count    int    // how many times this key has been banned, for escalation
	Failures int    // failures that triggered it; 0 for manual bans
}

// Reason is "manual" or "failures", as the API reports it.
func (b Ban) Reason() string {
	if b.Manual {
		return "manual"
	}
	return "failures"
}

// Active reports whether the ban is in force at now.
func (b Ban) Active(now time.Time) bool { return now.Before(b.Until) }

// record is the compact form kept per key; 16 bytes, no pointers.
type record struct {
	until    int64 // unix nanoseconds
	count    uint32
	failures uint16
	manual   bool
}

func (r record) ban(key netip.Prefix, note string) Ban {
	return Ban{Key: key, Until: time.Unix(0, r.until).UTC(), Manual: r.manual, Note: note,
		Count: int(r.count), Failures: int(r.failures)}
}

func recordOf(b Ban) record {
	return record{until: b.Until.UnixNano(), count: uint32(min(max(b.Count, 1), 1<<31)),
		failures: uint16(min(max(b.Failures, 0), 1<<16-1)), manual: b.Manual}
}

// BanTable holds ban records, active and recently expired (their counts drive
// escalation). It is safe for concurrent use.
//
// Records keyed by a ban unit (the /32 or /64 the Core bans) live in an LRU
// keyed by exact prefix: one map lookup per decision. Other prefixes (manual
// CIDR bans) live in a copy-on-write bart table read without a lock.
//
// Bound and eviction rule: at most max unit records. Adding a record to a
// full table first drops the record that was added or renewed longest ago, so
// no ban is evicted while an older one survives. Reads (Lookup) do not change
// that order. Range records are not evicted; Put refuses a new one when max
// are held.
type BanTable struct {
	mu      sync.RWMutex
	units   *simplelru.LRU[pkey, record]
	ranges  atomic.Pointer[bart.Table[record]]
	nranges int
	notes   map[netip.Prefix]string
	expiry  map[int64]int32 // active records by until second, for ActiveCount
	pruned  int64           // the second expiry was last pruned at
	max     int
}

// NewBanTable returns a table holding at most max unit records (max >= 1).
func NewBanTable(max int) *BanTable {
	lru, err := simplelru.NewLRU[pkey, record](max, nil)
	if err != nil {
		panic(err) // only for max < 1, which config validation rules out
	}
	t := &BanTable{units: lru, notes: map[netip.Prefix]string{}, expiry: map[int64]int32{}, max: max}
	t.ranges.Store(new(bart.Table[record]))
	return t
}

// isUnit reports whether key is the shape of a ban unit.
func isUnit(key netip.Prefix, v4, v6 int) bool {
	if key.Addr().Is4() {
		return key.Bits() == v4
	}
	return key.Bits() == v6
}

// lookup returns the record in force for addr, whose ban unit is unit.
func (t *BanTable) lookup(addr netip.Addr, unit netip.Prefix, now int64) (netip.Prefix, record, bool) {
	t.mu.RLock()
	r, ok := t.units.Peek(keyOf(unit))
	t.mu.RUnlock()
	if ok && r.until > now {
		return unit, r, true
	}
	rt := t.ranges.Load()
	if rt.Size() == 0 {
		return netip.Prefix{}, record{}, false
	}
	host := netip.PrefixFrom(addr, addr.BitLen())
	if p, r, ok := rt.LookupPrefixLPM(host); ok && r.until > now {
		return p, r, true
	} else if !ok {
		return netip.Prefix{}, record{}, false
	}
	// The longest matching range has expired; a shorter one may not have.
	for p, r := range rt.Supernets(host) {
		if r.until > now {
			return p, r, true
		}
	}
	return netip.Prefix{}, record{}, false
}

// get returns the record stored under key, active or not.
func (t *BanTable) get(key netip.Prefix, unit bool) (record, bool) {
	if unit {
		t.mu.RLock()
		defer t.mu.RUnlock()
		return t.units.Peek(keyOf(key))
	}
	return t.ranges.Load().Get(key)
}

// ban returns the record stored under key as a Ban, active or not.
func (t *BanTable) ban(key netip.Prefix, unit bool) (Ban, bool) {
	r, ok := t.get(key, unit)
	if !ok {
		return Ban{}, false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return r.ban(key, t.notes[key]), true
}

// put stores b; unit tells which part of the table it belongs in. It returns
// the record evicted to make room, if any, and false when a range record
// cannot be added because max ranges are held.
func (t *BanTable) put(b Ban, unit bool) (evicted Ban, didEvict, ok bool) {
	r := recordOf(b)
	t.mu.Lock()
	defer t.mu.Unlock()
	if unit {
		if old, ok := t.units.Peek(keyOf(b.Key)); ok {
			t.untrack(old)
		} else if t.units.Len() >= t.max {
			pk, old, _ := t.units.RemoveOldest()
			k := pk.prefix()
			t.untrack(old)
			evicted, didEvict = old.ban(k, t.notes[k]), true
			delete(t.notes, k)
		}
		t.units.Add(keyOf(b.Key), r)
	} else {
		rt := t.ranges.Load()
		old, exists := rt.Get(b.Key)
		if exists {
			t.untrack(old)
		} else if t.nranges >= t.max {
			return Ban{}, false, false
		} else {
			t.nranges++
		}
		t.ranges.Store(rt.InsertPersist(b.Key, r))
	}
	if b.Note != "" {
		t.notes[b.Key] = b.Note
	} else {
		delete(t.notes, b.Key)
	}
	t.expiry[expirySecond(r.until)]++
	return evicted, didEvict, true
}

// remove deletes the record under key and returns it.
func (t *BanTable) remove(key netip.Prefix, unit bool) (Ban, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var r record
	var ok bool
	if unit {
		if r, ok = t.units.Peek(keyOf(key)); ok {
			t.units.Remove(keyOf(key))
		}
	} else {
		rt := t.ranges.Load()
		if r, ok = rt.Get(key); ok {
			t.ranges.Store(rt.DeletePersist(key))
			t.nranges--
		}
	}
	if !ok {
		return Ban{}, false
	}
	t.untrack(r)
	b := r.ban(key, t.notes[key])
	delete(t.notes, key)
	return b, true
}

// covering returns the keys of the range records that contain addr.
func (t *BanTable) covering(addr netip.Addr) []netip.Prefix {
	var keys []netip.Prefix
	for p := range t.ranges.Load().Supernets(netip.PrefixFrom(addr, addr.BitLen())) {
		keys = append(keys, p)
	}
	return keys
}

func (t *BanTable) untrack(r record) {
	s := expirySecond(r.until)
	if n := t.expiry[s] - 1; n > 0 {
		t.expiry[s] = n
	} else {
		delete(t.expiry, s)
	}
}

// expirySecond is the second a record stops being active: until, rounded up.
func expirySecond(until int64) int64 { return (until + 1e9 - 1) / 1e9 }

// ActiveCount returns how many records are in force at now, to the second.
// It changes nothing; writers forget the passed seconds (prune).
func (t *BanTable) ActiveCount(now time.Time) int {
	sec := now.Unix()
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for s, c := range t.expiry {
		if s > sec {
			n += int(c)
		}
	}
	return n
}

// prune forgets the expiry seconds that have passed at now, at most once a
// second, so the expiry map holds only seconds still to come.
func (t *BanTable) prune(now time.Time) {
	sec := now.Unix()
	t.mu.Lock()
	defer t.mu.Unlock()
	if sec <= t.pruned {
		return
	}
	t.pruned = sec
	for s := range t.expiry {
		if s <= sec {
			delete(t.expiry, s)
		}
	}
}

// Len returns the number of records held, active or expired.
func (t *BanTable) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.units.Len() + t.nranges
}

// All returns every record held, oldest first; with activeOnly, only those in
// force at now.
func (t *BanTable) All(now time.Time, activeOnly bool) []Ban {
	n := now.UnixNano()
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]Ban, 0, t.units.Len()+t.nranges)
	keys, vals := t.units.Keys(), t.units.Values()
	for i, pk := range keys {
		if !activeOnly || vals[i].until > n {
			k := pk.prefix()
			out = append(out, vals[i].ban(k, t.notes[k]))
		}
	}
	for k, r := range t.ranges.Load().All() {
		if !activeOnly || r.until > n {
			out = append(out, r.ban(k, t.notes[k]))
		}
	}
	return out
}
