package nginxcache

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doorman/doorman/decide"
)

// MaxPerSlash64 is the most keys the Set holds inside one IPv6 /64. A host
// picks addresses freely inside its /64, so without this bound one client
// could fill the Set and make a ban of its /64 refresh a million addresses;
// with it, such a ban refreshes at most this many per nginx. (An IPv4 /24
// holds at most 512 keys, both spellings of 256 addresses.)
const MaxPerSlash64 = 64

// scanChunk is how many slots a long scan examines per hold of the lock, so
// that decisions remembering verdicts wait microseconds, not milliseconds.
const scanChunk = 4096

// Set remembers which verdicts nginx may hold in its cache: for each key,
// the verdict doorman answered and until when nginx may serve it. It is safe
// for concurrent use; time is passed in.
//
// Bound and eviction rule: at most max keys, and at most MaxPerSlash64 in one
// IPv6 /64. A key is forgotten once its until has passed (nginx's copy has
// expired), counting for the bound until the end of that second; a verdict
// for a new key when the bound is reached is refused —
// Remember reports false and the verdict must not be kept by nginx — rather
// than a key forgotten early. Remembering a key again keeps the later until.
//
// Layout: entries in one slice, found by a hash table of their keys and by a
// second one of their bucket (an IPv4 /24 or IPv6 /64 of the clean address),
// each bucket a ring of its entries. Entries also sit on a timing wheel of
// one-second slots by expiry; slots whose second has passed move whole to an
// expired list, from which each call frees a few. Nothing allocates once the
// tables have grown to the working size; they never shrink.
type Set struct {
	mark atomic.Uint64

	mu     sync.Mutex
	max    int
	life   int64 // the longest until past now, in nanoseconds
	wheel  int32 // wheel slots; entry indexes [0, wheel) are their sentinels, wheel the expired list's
	ents   []entry
	free   int32   // head of the free list (through wnext), 0 for none
	n      int     // entries in use, expired ones awaiting their free included
	nexp   int     // entries on the expired list
	swept  int64   // the wheel's slots up to this second are on the expired list
	wcount []int32 // entries per wheel slot
	keys   table   // by key
	bucket table   // by bucket; each slot also counts its bucket's entries
	seed   maphash.Seed
}

type entry struct {
	addr         [16]byte
	until        int64 // unix nanoseconds
	wnext, wprev int32 // wheel slot or expired list (rings with a sentinel); the free list
	bnext, bprev int32 // the bucket's ring
	reason       decide.Reason
	is4          bool
	used         bool
}

func (e *entry) key() Key { return Key{addr: e.addr, is4: e.is4} }

// table is an open-addressing hash table of entry indexes with linear
// probing and backward-shift deletion, so no tombstones build up. Each slot
// keeps the low 32 bits of its key's hash: probing and moving compare those
// without touching the entries.
type table struct {
	slot    []slot
	count   []uint16 // per slot, when counted
	used    int
	counted bool
}

type slot struct {
	i int32  // entry index; 0: empty
	h uint32 // the key's hash, low bits
}

// New returns a Set of at most max keys (max >= 1), none remembered longer
// than life past the moment it is remembered.
func New(max int, life time.Duration) *Set {
	w := int32(life/time.Second) + 3
	s := &Set{max: max, life: int64(life), wheel: w, seed: maphash.MakeSeed(), wcount: make([]int32, w)}
	s.ents = make([]entry, w+1, int(w)+1+min(max, 1024))
	for i := range s.ents {
		s.ents[i].wnext, s.ents[i].wprev = int32(i), int32(i)
	}
	s.bucket.counted = true
	s.keys.init(1024)
	s.bucket.init(1024)
	return s
}

func (t *table) init(n int) {
	t.slot = make([]slot, n)
	if t.counted {
		t.count = make([]uint16, n)
	}
}

// Mark returns the change mark: read it before deciding, pass it to Remember.
func (s *Set) Mark() uint64 { return s.mark.Load() }

// Change records that a change of verdicts is in force. Call it after the
// change and before asking In or Range which keys it touches: a decision
// made before the change, remembered after that question, then sees a new
// mark in Remember and is not kept.
func (s *Set) Change() { s.mark.Add(1) }

// Remember records that nginx may serve verdict r for k until until, and
// reports whether it may: false when k is new and the Set is at its bound,
// or when a change began after mark was read (the verdict may predate it).
// It does not allocate once the tables have grown.
func (s *Set) Remember(k Key, r decide.Reason, until, now time.Time, mark uint64) bool {
	u, t := until.UnixNano(), now.UnixNano()
	u = min(u, t+s.life)
	if u <= t {
		return false
	}
	s.mu.Lock()
	s.advance(t)
	s.reclaim(2)
	ok := s.remember(k, r, u)
	s.mu.Unlock()
	return ok && s.mark.Load() == mark
}

func (s *Set) remember(k Key, r decide.Reason, until int64) bool {
	h := s.hashKey(k)
	if i := s.find(h, k); i != 0 {
		e := &s.ents[i]
		e.reason = r
		if until > e.until {
			s.unlinkWheel(i)
			e.until = until
			s.linkWheel(i)
		}
		return true
	}
	if s.n >= s.max {
		if s.nexp == 0 {
			return false
		}
		s.reclaim(1)
	}
	bh, bk := s.hashBucket(k.Addr())
	head, bslot := s.findBucket(bh, bk)
	if head != 0 && !k.Addr().Is4() && s.bucket.count[bslot] >= MaxPerSlash64 {
		return false
	}
	i := s.alloc()
	e := &s.ents[i]
	*e = entry{addr: k.addr, is4: k.is4, until: until, reason: r, used: true}
	s.linkWheel(i)
	s.keys.insert(h, i)
	if head == 0 {
		e.bnext, e.bprev = i, i
		s.bucket.insert(bh, i)
	} else {
		n := s.ents[head].bnext
		e.bprev, e.bnext = head, n
		s.ents[head].bnext, s.ents[n].bprev = i, i
		s.bucket.count[bslot]++
	}
	s.n++
	return true
}

// In appends to dst the keys inside p (compared by their clean address) whose
// until is after now.
func (s *Set) In(p netip.Prefix, now time.Time, dst []Key) []Key {
	if !p.IsValid() {
		return dst
	}
	p = p.Masked()
	t := now.UnixNano()
	a := p.Addr()
	if p.IsSingleIP() {
		s.mu.Lock()
		defer s.mu.Unlock()
		k := KeyOf(a)
		for range 2 {
			if i := s.find(s.hashKey(k), k); i != 0 && s.ents[i].until > t {
				dst = append(dst, k)
			}
			if !k.is4 {
				break
			}
			k.is4 = false
		}
		return dst
	}
	g := 64
	if a.Is4() {
		g = 24
	}
	if p.Bits() >= g {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.appendBucket(dst, a, p, t)
	}
	probes := uint64(1) << min(g-p.Bits(), 63)
	s.mu.Lock()
	full := probes > uint64(len(s.ents))
	s.mu.Unlock()
	if full {
		s.scan(t, func(k Key, _ decide.Reason) {
			if p.Contains(k.Addr()) {
				dst = append(dst, k)
			}
		})
		return dst
	}
	for j := uint64(0); j < probes; j += scanChunk / 16 {
		s.mu.Lock()
		for i := j; i < min(j+scanChunk/16, probes); i++ {
			dst = s.appendBucket(dst, bucketAddr(a, g, i), p, t)
		}
		s.mu.Unlock()
	}
	return dst
}

// bucketAddr is the first address of the i-th bucket (of g bits) from a.
func bucketAddr(a netip.Addr, g int, i uint64) netip.Addr {
	b := a.As16()
	hi := binary.BigEndian.Uint64(b[:8])
	if g == 24 {
		v := binary.BigEndian.Uint32(b[12:]) + uint32(i)<<8
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	binary.BigEndian.PutUint64(b[:8], hi+i)
	return netip.AddrFrom16(b)
}

func (s *Set) appendBucket(dst []Key, a netip.Addr, p netip.Prefix, t int64) []Key {
	bh, bk := s.hashBucket(a)
	head, _ := s.findBucket(bh, bk)
	if head == 0 {
		return dst
	}
	for i := head; ; {
		e := &s.ents[i]
		if e.until > t {
			if k := e.key(); p.Contains(k.Addr()) {
				dst = append(dst, k)
			}
		}
		if i = e.bnext; i == head {
			return dst
		}
	}
}

// Range calls f with every key whose until is after now and the verdict
// remembered for it, in no order. It holds the lock for a chunk of entries
// at a time and never while f runs; a key remembered during the call may be
// missed, and one remembered before it is not.
func (s *Set) Range(now time.Time, f func(Key, decide.Reason)) { s.scan(now.UnixNano(), f) }

func (s *Set) scan(t int64, f func(Key, decide.Reason)) {
	type kr struct {
		k Key
		r decide.Reason
	}
	var buf []kr
	for from := 0; ; from += scanChunk {
		buf = buf[:0]
		s.mu.Lock()
		end := min(from+scanChunk, len(s.ents))
		for i := from; i < end; i++ {
			if e := &s.ents[i]; e.used && e.until > t {
				buf = append(buf, kr{e.key(), e.reason})
			}
		}
		done := end == len(s.ents)
		s.mu.Unlock()
		for _, x := range buf {
			f(x.k, x.r)
		}
		if done {
			return
		}
	}
}

// Len returns the number of keys held at now (those expiring within the
// current second included).
func (s *Set) Len(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now.UnixNano())
	return s.n - s.nexp
}

// advance moves the wheel slots of every second that has fully passed by t
// onto the expired list: each holds only entries expired by then, because an
// entry's slot is at most wheel-1 seconds ahead of the second it was linked in.
func (s *Set) advance(t int64) {
	sec := t / 1e9
	if sec <= s.swept {
		return
	}
	from := s.swept + 1
	if sec-s.swept > int64(s.wheel) {
		from = sec - int64(s.wheel) + 1
	}
	x := s.wheel // the expired list's sentinel
	for ; from <= sec; from++ {
		h := int32(from % int64(s.wheel))
		first, last := s.ents[h].wnext, s.ents[h].wprev
		if first == h {
			continue
		}
		s.nexp += int(s.wcount[h])
		s.wcount[h] = 0
		// Splice [first, last] to the tail of the expired list.
		tail := s.ents[x].wprev
		s.ents[tail].wnext, s.ents[first].wprev = first, tail
		s.ents[last].wnext, s.ents[x].wprev = x, last
		s.ents[h].wnext, s.ents[h].wprev = h, h
	}
	s.swept = sec
}

// reclaim frees up to n entries from the expired list.
func (s *Set) reclaim(n int) {
	x := s.wheel
	for ; n > 0 && s.nexp > 0; n-- {
		i := s.ents[x].wnext
		s.unlinkWheel(i)
		e := &s.ents[i]
		s.keys.remove(s.hashKey(e.key()), i)
		bh, bk := s.hashBucket(e.key().Addr())
		_, bslot := s.findBucket(bh, bk)
		if e.bnext == i {
			s.bucket.remove(bh, i)
		} else {
			s.ents[e.bprev].bnext, s.ents[e.bnext].bprev = e.bnext, e.bprev
			s.bucket.count[bslot]--
			if s.bucket.slot[bslot].i == i {
				s.bucket.slot[bslot].i = e.bnext
			}
		}
		*e = entry{wnext: s.free}
		s.free = i
		s.n--
	}
}

// onExpired reports whether entry i has been moved to the expired list.
func (s *Set) onExpired(i int32) bool { return (s.ents[i].until+1e9-1)/1e9 <= s.swept }

func (s *Set) unlinkWheel(i int32) {
	e := &s.ents[i]
	if s.onExpired(i) {
		s.nexp--
	} else {
		s.wcount[(e.until+1e9-1)/1e9%int64(s.wheel)]--
	}
	s.ents[e.wprev].wnext, s.ents[e.wnext].wprev = e.wnext, e.wprev
}

// linkWheel puts entry i in the slot of the second its until falls in
// (rounded up), or on the expired list if that second has passed.
func (s *Set) linkWheel(i int32) {
	sec := (s.ents[i].until + 1e9 - 1) / 1e9
	h := int32(sec % int64(s.wheel))
	if sec <= s.swept {
		h = s.wheel
		s.nexp++
	} else {
		s.wcount[h]++
	}
	tail := s.ents[h].wprev
	s.ents[i].wprev, s.ents[i].wnext = tail, h
	s.ents[tail].wnext, s.ents[h].wprev = i, i
}

func (s *Set) alloc() int32 {
	if i := s.free; i != 0 {
		s.free = s.ents[i].wnext
		return i
	}
	s.ents = append(s.ents, entry{})
	return int32(len(s.ents) - 1)
}
