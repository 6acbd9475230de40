package engine

import (
	"net/netip"
	"testing"
)

func TestLearnedKeys(t *testing.T) {
	q := NewLearnedKeys(3)
	keys := []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32"),
		netip.MustParsePrefix("2001:db8::/64"), netip.MustParsePrefix("198.51.100.0/24")}
	for i, k := range keys {
		if got, want := q.Put(k), i < 3; got != want {
			t.Fatalf("Put %s: %v, want %v (capacity 3)", k, got, want)
		}
	}
	first := <-q
	if b := q.Batch(first, 2); len(b) != 2 || b[0] != keys[0] || b[1] != keys[1] {
		t.Errorf("Batch(max 2) = %v, want the first two keys", b)
	}
	first = <-q
	if b := q.Batch(first, 256); len(b) != 1 || b[0] != keys[2] {
		t.Errorf("Batch of the last key = %v, want [%s] without waiting", b, keys[2])
	}
}
