package decide

import (
	"cmp"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"
)

// Ban is one ban record as the API, the store and the logs see it.
type Ban struct {
	Key      netip.Prefix
	Until    time.Time
	Manual   bool   // set by an operator, not by failures
	Range    bool   // a range escalated from the unit bans inside it
	Note     string // the operator's reason, for manual bans
	Count    int    // how many times this key has been banned, for escalation
	Failures int    // failures that triggered it; 0 for manual bans
}

// Reason is "manual", "range" or "failures", as the API reports it.
func (b Ban) Reason() string {
	switch {
	case b.Manual:
		return "manual"
	case b.Range:
		return "range"
	}
	return "failures"
}

// Active reports whether the ban is in force at now.
func (b Ban) Active(now time.Time) bool { return now.Before(b.Until) }

// Record kinds.
const (
	kindFailures uint8 = iota
	kindManual
	kindRange
)

// record is the compact form kept per key; 16 bytes, no pointers.
type record struct {
	until    int64 // unix nanoseconds
	count    uint32
	failures uint16
	kind     uint8
}

func (r record) ban(key netip.Prefix, note string) Ban {
	return Ban{Key: key, Until: time.Unix(0, r.until).UTC(), Manual: r.kind == kindManual, Range: r.kind == kindRange,
		Note: note, Count: int(r.count), Failures: int(r.failures)}
}

func recordOf(b Ban) record {
	r := record{until: b.Until.UnixNano(), count: uint32(min(max(b.Count, 1), 1<<31)),
		failures: uint16(min(max(b.Failures, 0), 1<<16-1))}
	switch {
	case b.Manual:
		r.kind = kindManual
	case b.Range:
		r.kind = kindRange
	}
	return r
}

// ErrTableFull is returned when the ban table holds its maximum of records
// and every one of them is an active manual ban, which is never evicted.
var ErrTableFull = errors.New("ban table full of active manual bans")

// entry is one record in the table's slot array.
type entry struct {
	key  pkey
	rec  record
	heap int32 // position in its eviction heap
}

// BanTable holds ban records, active and recently expired (their counts drive
// escalation). It is safe for concurrent use.
//
// Every record is indexed by its exact key (one map lookup per decision for
// the address's ban unit); records whose key is not a ban unit (CIDR bans,
// range bans) also live in a copy-on-write bart table for longest-prefix
// lookups, read without a lock. A record costs about 90 bytes: the map slot
// (17-byte key, 4-byte index), the 48-byte entry and a 4-byte heap slot.
//
// Bound and eviction rule: at most max records. Adding one to a full table
// first evicts, in this order: the expired record that ended longest ago;
// else the automatic ban (failures or range) that ends soonest. Manual bans
// are never evicted while active; when only they remain, put fails with
// ErrTableFull. Two heaps ordered by the end of the ban, one for automatic
// and one for manual records, make each choice O(log n). Reads do not change
// the order.
type BanTable struct {
	mu      sync.RWMutex
	index   map[pkey]int32
	slots   []entry
	free    []int32
	auto    endHeap // automatic records (failures, range), by end of ban
	manual  endHeap // manual records, by end of ban
	ranges  atomic.Pointer[bart.Table[record]]
	nranges int
	notes   map[netip.Prefix]string
	expiry  map[int64]int32 // active records by until second, for ActiveCount
	pruned  int64           // the second expiry was last pruned at
	max     int
}

// NewBanTable returns a table holding at most max records (max >= 1).
func NewBanTable(max int) *BanTable {
	if max < 1 {
		panic("decide: NewBanTable: max < 1") // config validation rules it out
	}
	t := &BanTable{index: map[pkey]int32{}, notes: map[netip.Prefix]string{}, expiry: map[int64]int32{}, max: max}
	end := func(i int32) int64 { return t.slots[i].rec.until }
	setPos := func(i, pos int32) { t.slots[i].heap = pos }
	t.auto = endHeap{end: end, setPos: setPos}
	t.manual = endHeap{end: end, setPos: setPos}
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
	i, ok := t.index[keyOf(unit)]
	var r record
	if ok {
		r = t.slots[i].rec
	}
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
func (t *BanTable) get(key netip.Prefix) (record, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	i, ok := t.index[keyOf(key)]
	if !ok {
		return record{}, false
	}
	return t.slots[i].rec, true
}

// ban returns the record stored under key as a Ban, active or not.
func (t *BanTable) ban(key netip.Prefix) (Ban, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	i, ok := t.index[keyOf(key)]
	if !ok {
		return Ban{}, false
	}
	return t.slots[i].rec.ban(key, t.notes[key]), true
}

// put stores b; unit tells whether its key is a ban unit. It returns the
// records evicted to make room (at most one), or ErrTableFull.
func (t *BanTable) put(b Ban, unit bool, now time.Time) ([]Ban, error) {
	r := recordOf(b)
	k := keyOf(b.Key)
	t.mu.Lock()
	defer t.mu.Unlock()
	var evicted []Ban
	i, exists := t.index[k]
	if exists {
		old := t.slots[i].rec
		t.untrack(old)
		t.heapOf(old).remove(t.slots[i].heap)
		t.slots[i].rec = r
	} else {
		if len(t.index) >= t.max {
			e, ok := t.evict(now.UnixNano())
			if !ok {
				return nil, ErrTableFull
			}
			evicted = append(evicted, e)
		}
		i = t.alloc(entry{key: k, rec: r})
		t.index[k] = i
		if !unit {
			t.nranges++
		}
	}
	t.heapOf(r).push(i)
	if !unit {
		t.ranges.Store(t.ranges.Load().InsertPersist(b.Key, r))
	}
	if b.Note != "" {
		t.notes[b.Key] = b.Note
	} else {
		delete(t.notes, b.Key)
	}
	t.expiry[expirySecond(r.until)]++
	return evicted, nil
}

// evict removes the record the eviction rule picks; t.mu is held.
func (t *BanTable) evict(now int64) (Ban, bool) {
	a, m := t.auto.min(), t.manual.min()
	pick := int32(-1)
	switch {
	case m >= 0 && t.slots[m].rec.until <= now && (a < 0 || t.slots[m].rec.until <= t.slots[a].rec.until):
		pick = m // an expired manual record that ended before any automatic one
	case a >= 0:
		pick = a // expired, or the automatic ban that ends soonest
	default:
		return Ban{}, false
	}
	return t.removeAt(pick), true
}

// remove deletes the record under key and returns it.
func (t *BanTable) remove(key netip.Prefix) (Ban, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, ok := t.index[keyOf(key)]
	if !ok {
		return Ban{}, false
	}
	return t.removeAt(i), true
}

// removeAt deletes the record in slot i; t.mu is held.
func (t *BanTable) removeAt(i int32) Ban {
	e := t.slots[i]
	key := e.key.prefix()
	t.heapOf(e.rec).remove(e.heap)
	delete(t.index, e.key)
	t.free = append(t.free, i)
	if _, ok := t.ranges.Load().Get(key); ok {
		t.ranges.Store(t.ranges.Load().DeletePersist(key))
		t.nranges--
	}
	t.untrack(e.rec)
	b := e.rec.ban(key, t.notes[key])
	delete(t.notes, key)
	return b
}

func (t *BanTable) alloc(e entry) int32 {
	if n := len(t.free); n > 0 {
		i := t.free[n-1]
		t.free = t.free[:n-1]
		t.slots[i] = e
		return i
	}
	t.slots = append(t.slots, e)
	return int32(len(t.slots) - 1)
}

func (t *BanTable) heapOf(r record) *endHeap {
	if r.kind == kindManual {
		return &t.manual
	}
	return &t.auto
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
	return len(t.index)
}

// All returns every record held, by end of ban (soonest first); with
// activeOnly, only those in force at now.
func (t *BanTable) All(now time.Time, activeOnly bool) []Ban {
	n := now.UnixNano()
	t.mu.RLock()
	out := make([]Ban, 0, len(t.index))
	for _, i := range t.index {
		e := t.slots[i]
		if !activeOnly || e.rec.until > n {
			k := e.key.prefix()
			out = append(out, e.rec.ban(k, t.notes[k]))
		}
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b Ban) int {
		return cmp.Or(a.Until.Compare(b.Until), a.Key.Addr().Compare(b.Key.Addr()), cmp.Compare(a.Key.Bits(), b.Key.Bits()))
	})
	return out
}
