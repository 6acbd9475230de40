package lists

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"

	"github.com/doorman/doorman/decide"
)

// benchFeed is a feed of n distinct public IPv4 prefixes (/16 to /32) in
// the Spamhaus DROP layout, with a comment on every line.
func benchFeed(n int) []byte {
	r := rand.New(rand.NewPCG(5, 5))
	seen := make(map[netip.Prefix]bool, n)
	var b bytes.Buffer
	b.WriteString("; benchmark feed\n")
	for len(seen) < n {
		a := netip.AddrFrom4([4]byte{byte(11 + r.IntN(90)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		p := netip.PrefixFrom(a, 16+r.IntN(17)).Masked()
		if seen[p] {
			continue
		}
		seen[p] = true
		fmt.Fprintf(&b, "%s ; SBL%d\n", p, len(seen))
	}
	return b.Bytes()
}

// BenchmarkLoadFeed is the work of a changed 1M-prefix feed: parse the
// body, build the lists; it reports the heap the built lists hold per
// prefix.
func BenchmarkLoadFeed(b *testing.B) {
	body := benchFeed(1_000_000)
	b.ReportAllocs()
	var l *decide.Lists
	for b.Loop() {
		p, err := Parse(bytes.NewReader(body), 2_000_000)
		if err != nil {
			b.Fatal(err)
		}
		l = decide.Build(decide.Spec{Sources: []decide.Source{{Name: "f", Reason: decide.Feed, Prefixes: p.Prefixes}}})
	}
	b.StopTimer()
	l = nil
	p, _ := Parse(bytes.NewReader(body), 2_000_000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l = decide.Build(decide.Spec{Sources: []decide.Source{{Name: "f", Reason: decide.Feed, Prefixes: p.Prefixes}}})
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(l.Sourced()), "B/prefix")
	runtime.KeepAlive(l)
	runtime.KeepAlive(p.Prefixes)
}
