package kernel

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestPartition(t *testing.T) {
	pp := netip.MustParsePrefix
	cases := []struct {
		name   string
		region string
		bans   []span
		want   []span
	}{
		{"one", "192.0.2.1/32", []span{{pp("192.0.2.1/32"), 5}}, []span{{pp("192.0.2.1/32"), 5}}},
		{"inner ends first", "192.0.2.0/24", []span{{pp("192.0.2.0/24"), 9}, {pp("192.0.2.7/32"), 5}},
			[]span{{pp("192.0.2.0/24"), 9}}},
		{"inner outlasts", "192.0.2.0/30", []span{{pp("192.0.2.0/30"), 5}, {pp("192.0.2.1/32"), 9}},
			[]span{{pp("192.0.2.0/32"), 5}, {pp("192.0.2.1/32"), 9}, {pp("192.0.2.2/31"), 5}}},
		{"no outer", "192.0.2.0/24", []span{{pp("192.0.2.1/32"), 5}, {pp("192.0.2.9/32"), 7}},
			[]span{{pp("192.0.2.1/32"), 5}, {pp("192.0.2.9/32"), 7}}},
		{"ipv6", "2001:db8::/63", []span{{pp("2001:db8::/63"), 5}, {pp("2001:db8:0:1::/64"), 9}},
			[]span{{pp("2001:db8::/64"), 5}, {pp("2001:db8:0:1::/64"), 9}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := partition(pp(tc.region), tc.bans)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestPartitionGolden compares partition with the obvious answer on random
// nested bans: for every address of the region, the latest end of the bans
// covering it is the end of the one element holding it, and elements are
// disjoint.
func TestPartitionGolden(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 42))
	region := netip.MustParsePrefix("198.51.100.0/24")
	for round := range 300 {
		var bans []span
		seen := map[netip.Prefix]bool{}
		for range 1 + r.IntN(12) {
			bits := 24 + r.IntN(9)
			a := netip.AddrFrom4([4]byte{198, 51, 100, byte(r.IntN(256))})
			p, _ := a.Prefix(bits)
			if !seen[p] {
				seen[p] = true
				bans = append(bans, span{p, int64(1 + r.IntN(6))})
			}
		}
		want := make([]int64, 256)
		for _, b := range bans {
			for i := range 256 {
				if b.p.Contains(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})) {
					want[i] = max(want[i], b.until)
				}
			}
		}
		got := make([]int64, 256)
		for _, e := range partition(region, slicesClone(bans)) {
			for i := range 256 {
				if e.p.Contains(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})) {
					if got[i] != 0 {
						t.Fatalf("round %d: %v overlaps another element", round, e)
					}
					got[i] = e.until
				}
			}
		}
		for i := range 256 {
			if got[i] != want[i] {
				t.Fatalf("round %d: bans %v: 198.51.100.%d got end %d, want %d", round, bans, i, got[i], want[i])
			}
		}
	}
}

func slicesClone(s []span) []span { return append([]span(nil), s...) }

func TestPrefixOf(t *testing.T) {
	for _, s := range []string{"192.0.2.1/32", "198.51.100.0/24", "255.255.255.0/24", "0.0.0.0/0", "2001:db8::/64", "2001:db8::1/128", "ffff::/16", "::/0"} {
		p := netip.MustParsePrefix(s)
		got, ok := prefixOf(intervalOf(p))
		if !ok || got != p {
			t.Errorf("prefixOf(intervalOf(%v)) = %v, %v; want %v", p, got, ok, p)
		}
	}
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.4")
	if p, ok := prefixOf(interval{a, b}); ok {
		t.Errorf("prefixOf(192.0.2.1-192.0.2.4) = %v, want none", p)
	}
}
