package nginxcache

// The hash tables behind Set: open addressing with linear probing over
// entry indexes, one keyed by address and one by /24 or /64 bucket.

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
)

func (s *Set) hashKey(k Key) uint64 {
	var b [17]byte
	copy(b[:], k.addr[:])
	if k.is4 {
		b[16] = 1
	}
	return maphash.Bytes(s.seed, b[:])
}

// bucketKey is the IPv4 /24 or IPv6 /64 of a clean address, tagged by family.
type bucketKey struct {
	hi  uint64
	is4 bool
}

func bucketOf(a netip.Addr) bucketKey {
	if a.Is4() {
		b := a.As4()
		return bucketKey{hi: uint64(b[0])<<16 | uint64(b[1])<<8 | uint64(b[2]), is4: true}
	}
	b := a.As16()
	return bucketKey{hi: binary.BigEndian.Uint64(b[:8])}
}

func (s *Set) hashBucket(a netip.Addr) (uint64, bucketKey) {
	k := bucketOf(a)
	var b [9]byte
	binary.LittleEndian.PutUint64(b[:8], k.hi)
	if k.is4 {
		b[8] = 1
	}
	return maphash.Bytes(s.seed, b[:]), k
}

func (s *Set) find(h uint64, k Key) int32 {
	mask, h32 := uint32(len(s.keys.slot)-1), uint32(h)
	for j := h32 & mask; ; j = (j + 1) & mask {
		x := s.keys.slot[j]
		if x.i == 0 {
			return 0
		}
		if e := &s.ents[x.i]; x.h == h32 && e.addr == k.addr && e.is4 == k.is4 {
			return x.i
		}
	}
}

// findBucket returns an entry of the bucket k (0 for none) and its table slot.
func (s *Set) findBucket(h uint64, k bucketKey) (int32, uint32) {
	mask, h32 := uint32(len(s.bucket.slot)-1), uint32(h)
	for j := h32 & mask; ; j = (j + 1) & mask {
		x := s.bucket.slot[j]
		if x.i == 0 {
			return 0, j
		}
		if x.h == h32 && bucketOf(s.ents[x.i].key().Addr()) == k {
			return x.i, j
		}
	}
}

// insert adds entry i, known to be absent, growing the table at half full.
func (t *table) insert(h uint64, i int32) {
	if 2*(t.used+1) > len(t.slot) {
		t.grow()
	}
	j := t.free(uint32(h))
	t.slot[j] = slot{i: i, h: uint32(h)}
	if t.counted {
		t.count[j] = 1
	}
	t.used++
}

// free returns the first empty slot of the probe run from h's home.
func (t *table) free(h uint32) uint32 {
	mask := uint32(len(t.slot) - 1)
	j := h & mask
	for t.slot[j].i != 0 {
		j = (j + 1) & mask
	}
	return j
}

func (t *table) grow() {
	old, oldCount := t.slot, t.count
	t.init(2 * len(old))
	for x, sl := range old {
		if sl.i == 0 {
			continue
		}
		j := t.free(sl.h)
		t.slot[j] = sl
		if t.counted {
			t.count[j] = oldCount[x]
		}
	}
}

// remove deletes entry i, shifting back the entries of its probe run.
func (t *table) remove(h uint64, i int32) {
	mask := uint32(len(t.slot) - 1)
	j := uint32(h) & mask
	for t.slot[j].i != i {
		j = (j + 1) & mask
	}
	for {
		t.slot[j] = slot{}
		k := j
		for {
			k = (k + 1) & mask
			x := t.slot[k]
			if x.i == 0 {
				t.used--
				return
			}
			// Move x back to j unless its home lies cyclically in (j, k].
			home := x.h & mask
			if j <= k && (home <= j || home > k) || j > k && home <= j && home > k {
				t.slot[j] = x
				if t.counted {
					t.count[j] = t.count[k]
				}
				j = k
				break
			}
		}
	}
}
