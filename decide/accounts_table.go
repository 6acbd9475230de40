package decide

import "math"

// lockTable counts failures per key in a sliding window and locks a key once
// limit of them fall within the window. It is the state behind Accounts (keys
// are normalised usernames) and behind device tokens (keys are token hashes).
// It is not safe for concurrent use; Accounts serializes it.
//
// Layout: entries live in one slice (slots) and refer to each other by int32
// index, so the table adds no pointer per entry beyond the key's and the
// failure times'; a map finds a key's slot. Entries not locked form a list
// ordered by last activity (head: least recent). Locked entries leave that
// list for a min-heap ordered by lock end. When a lock has ended, its entry
// goes back to the list's tail (its end counts as activity), keeping its lock
// count for escalation.
//
// Bound and eviction rule: at most max entries. A new key in a full table
// evicts the head of the list, the entry least recently active; only when
// every entry is locked, the lock that ends soonest.
type lockTable[K comparable] struct {
	limit   int     // failures within window that lock
	window  int64   // nanoseconds
	lock    int64   // first lock's length, nanoseconds
	factor  float64 // each further lock lasts this much longer
	maxLock int64   // cap on a lock; also how long a lock count is remembered after the lock ends
	max     int

	index      map[K]int32
	slots      []slot[K]
	spare      []int32 // indices of unused slots
	head, tail int32   // the list of entries not locked; -1 when empty
	heap       endHeap // locked entries, by until
}

// slot is one entry: 64 bytes for a string key (16 key, 24 times, 8 until,
// 4 count, 12 links), plus the key's bytes and 8 per remembered failure.
type slot[K comparable] struct {
	key        K
	times      []int64 // failure times (unix ns), oldest first, at most limit
	until      int64   // end of the current or last lock (unix ns); 0 if never locked
	count      uint32  // locks so far, for escalation; 0 once forgotten
	prev, next int32   // list links while not locked; -1 at the ends
	hpos       int32   // index in heap while locked; -1 when not
}

func newLockTable[K comparable](max, limit int, window, lock, maxLock int64, factor float64) *lockTable[K] {
	t := &lockTable[K]{limit: limit, window: window, lock: lock, factor: factor, maxLock: maxLock,
		max: max, index: map[K]int32{}, head: -1, tail: -1}
	t.heap = endHeap{end: func(i int32) int64 { return t.slots[i].until }, setPos: func(i, pos int32) { t.slots[i].hpos = pos }}
	return t
}

// evicted is an entry dropped to make room.
type evicted[K comparable] struct {
	key    K
	locked bool // its lock was in force
	count  uint32
}

// failure is what one failure did to an entry.
type failure struct {
	failures int   // failures within the window, this one included
	locked   bool  // locked after this failure
	newLock  bool  // this failure started the lock
	until    int64 // the lock's end, when locked
	count    uint32
}

// fail records a failure of key at now (unix ns). An entry already locked
// counts it (the count is shown) but its lock is not extended.
func (t *lockTable[K]) fail(key K, now int64) (failure, []evicted[K]) {
	t.release(now)
	i, ok := t.index[key]
	var ev []evicted[K]
	if !ok {
		i, ev = t.add(key)
	}
	s := &t.slots[i]
	t.forget(s, now)
	if len(s.times) == t.limit {
		copy(s.times, s.times[1:])
		s.times = s.times[:len(s.times)-1]
	}
	if len(s.times) == cap(s.times) {
		// Grow to at most limit: append would round up to a power of two.
		times := make([]int64, len(s.times), min(max(2*cap(s.times), 1), t.limit))
		copy(times, s.times)
		s.times = times
	}
	s.times = append(s.times, now)
	f := failure{failures: len(s.times), count: s.count}
	if s.hpos >= 0 {
		f.locked, f.until = true, s.until
		return f, ev
	}
	if len(s.times) < t.limit {
		t.unlink(i)
		t.pushBack(i)
		return f, ev
	}
	s.count++
	s.until = now + t.duration(s.count)
	t.unlink(i)
	t.heap.push(i)
	f.locked, f.newLock, f.until, f.count = true, true, s.until, s.count
	return f, ev
}

// status returns key's failures within the window and its lock, if in force
// at now. It changes nothing.
func (t *lockTable[K]) status(key K, now int64) (failures int, locked bool, until int64, count uint32, found bool) {
	i, ok := t.index[key]
	if !ok {
		return 0, false, 0, 0, false
	}
	s := &t.slots[i]
	low := t.low(s, now)
	for _, ts := range s.times {
		if ts > low {
			failures++
		}
	}
	locked = s.hpos >= 0 && s.until > now
	if locked || s.until > 0 && now-s.until <= t.maxLock {
		count = s.count
	}
	return failures, locked, s.until, count, true
}

// low is the time at or before which failures of s no longer count: the
// window's start, or the instant before its last lock ended when that is
// later, so that the failures that led to a lock (and those made during it)
// are forgotten when it ends.
func (t *lockTable[K]) low(s *slot[K], now int64) int64 {
	low := now - t.window
	if s.until > low && s.until <= now {
		low = s.until - 1
	}
	return low
}

// forget drops the failures of s that no longer count at now, and its lock
// count once remembered for maxLock after its lock ended.
func (t *lockTable[K]) forget(s *slot[K], now int64) {
	low := t.low(s, now)
	n := 0
	for n < len(s.times) && s.times[n] <= low {
		n++
	}
	if n > 0 {
		s.times = s.times[:copy(s.times, s.times[n:])]
	}
	if s.hpos < 0 && s.count > 0 && now-s.until > t.maxLock {
		s.count = 0
	}
}

// apply sets key's lock as given (from the store or another instance): in
// force until until, with count for escalation. A lock that ended longer
// than maxLock ago is not kept.
func (t *lockTable[K]) apply(key K, until int64, count uint32, now int64) []evicted[K] {
	t.release(now)
	if until <= now && now-until > t.maxLock {
		return nil
	}
	i, ok := t.index[key]
	var ev []evicted[K]
	if !ok {
		i, ev = t.add(key)
	}
	s := &t.slots[i]
	s.until, s.count = until, count
	if until > now {
		if s.hpos >= 0 {
			t.heap.fix(s.hpos)
		} else {
			t.unlink(i)
			t.heap.push(i)
		}
	} else if s.hpos >= 0 {
		t.heap.remove(s.hpos)
		t.pushBack(i)
	}
	t.forget(s, now)
	return ev
}

// remove forgets key entirely: failures, lock and lock count.
func (t *lockTable[K]) remove(key K) (slot[K], bool) {
	i, ok := t.index[key]
	if !ok {
		return slot[K]{}, false
	}
	s := t.slots[i]
	t.drop(i)
	return s, true
}

// release moves the entries whose lock has ended at now back to the list.
func (t *lockTable[K]) release(now int64) {
	for t.heap.len() > 0 && t.slots[t.heap.items[0]].until <= now {
		i := t.heap.items[0]
		t.heap.remove(0)
		t.pushBack(i)
	}
}

// add makes a slot for key, evicting an entry when the table is full.
func (t *lockTable[K]) add(key K) (int32, []evicted[K]) {
	var ev []evicted[K]
	if len(t.index) >= t.max {
		victim := t.head
		if victim < 0 {
			victim = t.heap.items[0]
		}
		s := &t.slots[victim]
		ev = append(ev, evicted[K]{key: s.key, locked: s.hpos >= 0, count: s.count})
		t.drop(victim)
	}
	var i int32
	if n := len(t.spare); n > 0 {
		i, t.spare = t.spare[n-1], t.spare[:n-1]
		t.slots[i] = slot[K]{key: key, times: t.slots[i].times[:0]}
	} else {
		i = int32(len(t.slots))
		t.slots = append(t.slots, slot[K]{key: key})
	}
	s := &t.slots[i]
	s.prev, s.next, s.hpos = -1, -1, -1
	t.index[key] = i
	t.pushBack(i)
	return i, ev
}

// drop removes slot i from the index, the list or the heap, and keeps it for
// reuse (with its times' array).
func (t *lockTable[K]) drop(i int32) {
	s := &t.slots[i]
	delete(t.index, s.key)
	if s.hpos >= 0 {
		t.heap.remove(s.hpos)
	} else {
		t.unlink(i)
	}
	var zero K
	*s = slot[K]{key: zero, times: s.times[:0], prev: -1, next: -1, hpos: -1}
	t.spare = append(t.spare, i)
}

// duration is lock × factor^(count-1), capped at maxLock.
func (t *lockTable[K]) duration(count uint32) int64 {
	d := float64(t.lock) * math.Pow(t.factor, float64(count)-1)
	if d >= float64(t.maxLock) || math.IsNaN(d) || math.IsInf(d, 0) {
		return t.maxLock
	}
	return int64(d)
}

// lockedCount returns how many locks are in force at now. It changes
// nothing: the ended locks are the heap's top subtree, visited alone.
func (t *lockTable[K]) lockedCount(now int64) int {
	ended := 0
	stack := []int{0}
	for len(stack) > 0 && t.heap.len() > 0 {
		j := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if j >= t.heap.len() || t.slots[t.heap.items[j]].until > now {
			continue
		}
		ended++
		stack = append(stack, 2*j+1, 2*j+2)
	}
	return t.heap.len() - ended
}

// The list of entries not locked.

func (t *lockTable[K]) pushBack(i int32) {
	s := &t.slots[i]
	s.prev, s.next = t.tail, -1
	if t.tail >= 0 {
		t.slots[t.tail].next = i
	} else {
		t.head = i
	}
	t.tail = i
}

func (t *lockTable[K]) unlink(i int32) {
	s := &t.slots[i]
	if s.prev >= 0 {
		t.slots[s.prev].next = s.next
	} else if t.head == i {
		t.head = s.next
	}
	if s.next >= 0 {
		t.slots[s.next].prev = s.prev
	} else if t.tail == i {
		t.tail = s.prev
	}
	s.prev, s.next = -1, -1
}
