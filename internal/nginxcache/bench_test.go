package nginxcache

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
)

// benchSet returns a Set holding n keys: random IPv4 addresses and IPv6
// addresses in random /64s, half each, and the addresses.
func benchSet(n int) (*Set, []netip.Addr) {
	r := rand.New(rand.NewPCG(42, 42))
	s := New(n, 11*time.Second)
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		if i%2 == 0 {
			addrs[i] = netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
		} else {
			var b [16]byte
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			addrs[i] = netip.AddrFrom16(b)
		}
		s.Remember(KeyOf(addrs[i]), decide.Allowed, t0.Add(10*time.Second), t0, s.Mark())
	}
	return s, addrs
}

func BenchmarkRemember(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		s, addrs := benchSet(n)
		// held: a decision for an address nginx already keeps, renewed.
		b.Run(fmt.Sprintf("keys=%d/held", n), func(b *testing.B) {
			b.ReportAllocs()
			i, now := 0, t0
			for b.Loop() {
				i = (i + 1) % len(addrs)
				now = now.Add(time.Microsecond)
				s.Remember(KeyOf(addrs[i]), decide.Allowed, now.Add(10*time.Second), now, s.Mark())
			}
		})
		// new: a full Set, every decision for a new address, making room by
		// freeing one whose until has passed (the clock runs 10 s per n calls).
		b.Run(fmt.Sprintf("keys=%d/new-at-bound", n), func(b *testing.B) {
			b.ReportAllocs()
			now, step := t0.Add(20*time.Second), 10*time.Second/time.Duration(n)
			x := uint32(0)
			for b.Loop() {
				x++
				now = now.Add(step)
				a := netip.AddrFrom4([4]byte{10, byte(x >> 16), byte(x >> 8), byte(x)})
				s.Remember(KeyOf(a), decide.Allowed, now.Add(10*time.Second), now, s.Mark())
			}
		})
	}
}

func BenchmarkIn(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		s, addrs := benchSet(n)
		prefixes := []struct {
			name string
			bits func(a netip.Addr) int
		}{
			{"unit-/32-or-/64", func(a netip.Addr) int { return map[bool]int{true: 32, false: 64}[a.Is4()] }},
			{"range-/24-or-/56", func(a netip.Addr) int { return map[bool]int{true: 24, false: 56}[a.Is4()] }},
			{"range-/16-or-/48", func(a netip.Addr) int { return map[bool]int{true: 16, false: 48}[a.Is4()] }},
			{"range-/8-or-/32", func(a netip.Addr) int { return map[bool]int{true: 8, false: 32}[a.Is4()] }},
		}
		for _, p := range prefixes {
			b.Run(fmt.Sprintf("keys=%d/%s", n, p.name), func(b *testing.B) {
				b.ReportAllocs()
				ps := make([]netip.Prefix, 1024)
				for i := range ps {
					a := addrs[i*7919%len(addrs)]
					ps[i] = netip.PrefixFrom(a, p.bits(a)).Masked()
				}
				dst := make([]Key, 0, 1024)
				i := 0
				for b.Loop() {
					i = (i + 1) % len(ps)
					dst = s.In(ps[i], t0, dst[:0])
				}
			})
		}
	}
}

func BenchmarkKeyFor(b *testing.B) {
	for _, tc := range []struct{ name, addr string }{{"ipv4", "203.0.113.7"}, {"ipv6", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"}} {
		a := netip.MustParseAddr(tc.addr)
		raw := []byte(tc.addr)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				KeyFor(a, raw)
			}
		})
	}
}
