package decide

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// Benchmarks of the decision path's tables at production sizes:
// 100k deny prefixes, a 1k allowlist, 100k and 1M bans. Lookups cycle through
// a large set of random addresses, so a table that does not fit in cache
// shows its cache misses instead of hitting the same lines again.

var benchNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// benchPrefixes returns n distinct random IPv4 prefixes /16–/32, three in
// four of them /24 or longer, none in 127.0.0.0/8.
func benchPrefixes(r *rand.Rand, n int) []netip.Prefix {
	loop := netip.MustParsePrefix("127.0.0.0/8")
	seen := make(map[netip.Prefix]bool, n)
	out := make([]netip.Prefix, 0, n)
	for len(out) < n {
		a := netip.AddrFrom4([4]byte{byte(1 + r.IntN(222)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		bits := 16 + r.IntN(17)
		if bits < 24 && r.IntN(4) != 0 {
			bits = 24 + r.IntN(9)
		}
		p := netip.PrefixFrom(a, bits).Masked()
		if p.Overlaps(loop) || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}

// benchAddrs returns n addresses of which a fraction hit are inside prefixes
// (a random host of a random prefix) and the rest are random addresses that
// in reports false for.
func benchAddrs(r *rand.Rand, n int, hit float64, prefixes []netip.Prefix, in func(netip.Addr) bool) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for len(out) < n {
		if r.Float64() < hit {
			p := prefixes[r.IntN(len(prefixes))]
			b := p.Addr().As4()
			host := r.Uint32() & (1<<(32-p.Bits()) - 1)
			b[0] |= byte(host >> 24)
			b[1] |= byte(host >> 16)
			b[2] |= byte(host >> 8)
			b[3] |= byte(host)
			out = append(out, netip.AddrFrom4(b))
			continue
		}
		a := netip.AddrFrom4([4]byte{byte(1 + r.IntN(222)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		if !in(a) {
			out = append(out, a)
		}
	}
	return out
}

// BenchmarkListLookup is one deny-list lookup (bart.Lite) at 100k and 1M
// prefixes: one address again and again (cache-hot, as the benchmark's single
// source), then 64k random addresses: all hits, all misses, and mostly misses
// (1 in 10 hits), as real traffic is.
func BenchmarkListLookup(b *testing.B) {
	for _, size := range []int{100_000, 1_000_000} {
		r := rand.New(rand.NewPCG(42, 42))
		ps := benchPrefixes(r, size)
		l := NewLists(nil, ps, nil)
		for _, mix := range []struct {
			name string
			hit  float64
			n    int
		}{{"hit-same", 1, 1}, {"miss-same", 0, 1}, {"hit", 1, 1 << 16}, {"miss", 0, 1 << 16}, {"mostly-miss", 0.1, 1 << 16}} {
			addrs := benchAddrs(r, mix.n, mix.hit, ps, l.Denied)
			b.Run(fmt.Sprintf("prefixes=%d/%s", size, mix.name), func(b *testing.B) {
				b.ReportAllocs()
				i, hits := 0, 0
				for b.Loop() {
					if l.Denied(addrs[i&(len(addrs)-1)]) {
						hits++
					}
					i++
				}
				if mix.hit == 1 && hits != i || mix.hit == 0 && hits != 0 {
					b.Fatalf("%d hits of %d lookups", hits, i)
				}
			})
		}
	}
}

// benchWorld is a Core loaded as in the HTTP benchmark: deny prefixes, a 1k
// allowlist holding 127.0.0.1 and the banned addresses' 100.64.0.0/10, and
// bans of distinct addresses in 100.64.0.0/10. It returns the banned addresses.
func benchWorld(b *testing.B, prefixes, bans int) (*Core, []netip.Addr) {
	b.Helper()
	r := rand.New(rand.NewPCG(7, 7))
	deny := benchPrefixes(r, prefixes)
	allow := append(benchPrefixes(r, 998), netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("100.64.0.0/10"))
	p := Policy{MaxFailures: 5, FindTime: 10 * time.Minute, BanTime: time.Hour, BanFactor: 2,
		MaxBanTime: 168 * time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}
	c := New(p, NewLists(allow, deny, nil), 1_000_000, 1_000_000)
	banned := make([]netip.Addr, 0, bans)
	for i := range bans {
		x := uint32(i) * 2654435761 // distinct for distinct i
		a := netip.AddrFrom4([4]byte{100, 64 | byte(x>>16)&63, byte(x >> 8), byte(x)})
		if c.Decide(a, benchNow).Reason != Allowed { // denylisted or a repeat: not a ban lookup
			continue
		}
		c.Apply(Ban{Key: netip.PrefixFrom(a, 32), Until: benchNow.Add(time.Hour), Count: 1}, benchNow)
		banned = append(banned, a)
	}
	return c, banned
}

// BenchmarkDecide is Core.Decide on the HTTP benchmark's tables: the allow
// path of the bench source, the deny path of a banned source, and random
// banned and unbanned addresses cycled through a table bigger than the cache.
func BenchmarkDecide(b *testing.B) {
	for _, bans := range []int{100_000, 1_000_000} {
		c, banned := benchWorld(b, 100_000, bans)
		src := netip.MustParseAddr("127.0.0.1")
		name := func(s string) string { return fmt.Sprintf("prefixes=100000/bans=%d/%s", bans, s) }
		b.Run(name("allow-one-source"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !c.Decide(src, benchNow).Allow {
					b.Fatal("denied")
				}
			}
		})
		b.Run(name("deny-one-banned-source"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if c.Decide(banned[0], benchNow).Reason != Banned {
					b.Fatal("not banned")
				}
			}
		})
		r := rand.New(rand.NewPCG(3, 3))
		spread := make([]netip.Addr, 1<<16)
		for i := range spread {
			spread[i] = banned[r.IntN(len(banned))]
		}
		b.Run(name("deny-random-banned"), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if c.Decide(spread[i&(len(spread)-1)], benchNow).Reason != Banned {
					b.Fatal("not banned")
				}
				i++
			}
		})
		unbanned := make([]netip.Addr, 0, 1<<16)
		for len(unbanned) < cap(unbanned) {
			a := netip.AddrFrom4([4]byte{100, 64 | byte(r.IntN(64)), byte(r.IntN(256)), byte(r.IntN(256))})
			if c.Decide(a, benchNow).Allow {
				unbanned = append(unbanned, a)
			}
		}
		b.Run(name("allow-random-mostly-miss"), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if !c.Decide(unbanned[i&(len(unbanned)-1)], benchNow).Allow {
					b.Fatal("denied")
				}
				i++
			}
		})
	}
}

// BenchmarkMemoryPerBan fills a ban table of the default size (1M) with /32
// bans and reports the Go heap it holds per ban (B/ban); RSS is about this
// plus the GC's headroom (GOGC). It also reports a failure tracker's heap per
// tracked address at 1M addresses with one failure each.
func BenchmarkMemoryPerBan(b *testing.B) {
	const n = 1_000_000
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	b.Run("bans", func(b *testing.B) {
		for b.Loop() {
			before := heap()
			t := NewBanTable(n)
			until := benchNow.Add(time.Hour)
			for i := range n {
				a := netip.AddrFrom4([4]byte{byte(1 + i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
				// Spread over an hour, as bans made over time are.
				t.put(Ban{Key: netip.PrefixFrom(a, 32), Until: until.Add(time.Duration(i) * 3600 * time.Second / n), Count: 1, Failures: 5}, true, benchNow)
			}
			b.ReportMetric(float64(heap()-before)/n, "B/ban")
			runtime.KeepAlive(t)
		}
	})
	b.Run("tracked", func(b *testing.B) {
		for b.Loop() {
			before := heap()
			t := NewTracker(n, 5)
			now := benchNow.UnixNano()
			for i := range n {
				a := netip.AddrFrom4([4]byte{byte(1 + i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
				t.Add(netip.PrefixFrom(a, 32), now+int64(i), int64(10*time.Minute))
			}
			b.ReportMetric(float64(heap()-before)/n, "B/address")
			runtime.KeepAlive(t)
		}
	})
}

// BenchmarkDecideSources is Core.Decide on the HTTP benchmark's tables
// (100k deny prefixes, 100k bans) without deny sources, then with 1M feed
// prefixes and an allowed country's 200k networks joining the allow list,
// over 64k random allowed addresses (mostly misses, as real traffic is).
// The ratio of the two is the cost the sources add to every decision.
func BenchmarkDecideSources(b *testing.B) {
	c, _ := benchWorld(b, 100_000, 100_000)
	r := rand.New(rand.NewPCG(9, 9))
	feed := benchPrefixes(r, 1_000_000)
	base := c.Lists()
	allow := append(benchPrefixes(r, 200_000), netip.MustParsePrefix("100.64.0.0/10"))
	withSources := Build(Spec{Allow: allow, AllowCountries: true, Deny: benchPrefixes(rand.New(rand.NewPCG(7, 7)), 100_000),
		Sources: []Source{{Name: "feed", Reason: Feed, Prefixes: feed}, {Name: "AS64500", Reason: ASN, Prefixes: benchPrefixes(r, 1000)}}})
	addrs := make([]netip.Addr, 0, 1<<16)
	for len(addrs) < cap(addrs) {
		a := netip.AddrFrom4([4]byte{100, 64 | byte(r.IntN(64)), byte(r.IntN(256)), byte(r.IntN(256))})
		c.SetLists(withSources)
		ok := c.Decide(a, benchNow).Allow
		c.SetLists(base)
		if ok && c.Decide(a, benchNow).Allow {
			addrs = append(addrs, a)
		}
	}
	for _, tc := range []struct {
		name  string
		lists *Lists
	}{{"no-sources", base}, {"feed=1M/country=200k", withSources}} {
		c.SetLists(tc.lists)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if !c.Decide(addrs[i&(len(addrs)-1)], benchNow).Allow {
					b.Fatal("denied")
				}
				i++
			}
		})
	}
}
