package kernel

import (
	"bytes"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
)

// interval is a set element as the kernel holds it: from start to end, end
// excluded; an invalid end reaches the top of the address space.
type interval struct{ start, end netip.Addr }

// intervalOf is the interval of p's addresses.
func intervalOf(p netip.Prefix) interval {
	p = p.Masked()
	a := p.Addr().As16()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	// The last address of p plus one: the host bits set, then carry.
	for i := bits; i < 128; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	for i := 15; i >= 0; i-- {
		a[i]++
		if a[i] != 0 {
			break
		}
	}
	end := netip.AddrFrom16(a)
	if p.Addr().Is4() {
		if !end.Is4In6() { // past 255.255.255.255
			return interval{start: p.Addr()}
		}
		end = end.Unmap()
	} else if end.IsUnspecified() {
		return interval{start: p.Addr()}
	}
	return interval{start: p.Addr(), end: end}
}

// elements are the set elements of spans: each interval's start carries the
// timeout (the ban's end, rounded up to the millisecond), then its end.
func elements(spans []span, now int64, timeout bool) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(spans))
	for _, s := range spans {
		iv := intervalOf(s.p)
		e := nftables.SetElement{Key: iv.start.AsSlice()}
		if timeout {
			e.Timeout = time.Duration((s.until - now + 1e6 - 1) / 1e6 * 1e6)
		}
		out = append(out, e)
		if iv.end.IsValid() {
			out = append(out, nftables.SetElement{Key: iv.end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// deletions are the elements that delete ivs.
func deletions(ivs []interval) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(ivs))
	for _, iv := range ivs {
		out = append(out, nftables.SetElement{Key: iv.start.AsSlice()})
		if iv.end.IsValid() {
			out = append(out, nftables.SetElement{Key: iv.end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// held is an interval read from the kernel with the time it has left.
type held struct {
	iv      interval
	expires time.Duration // 0: no timeout
}

// intervals pairs the elements of an interval set, as the kernel lists them
// (in no promised order), into intervals. An end without a start before it
// is left out: it delimits nothing.
func intervals(els []nftables.SetElement) []held {
	slices.SortFunc(els, func(a, b nftables.SetElement) int {
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		switch { // at one key, the end of an interval before the start of the next
		case a.IntervalEnd == b.IntervalEnd:
			return 0
		case a.IntervalEnd:
			return -1
		}
		return 1
	})
	var out []held
	for i := 0; i < len(els); i++ {
		e := els[i]
		if e.IntervalEnd {
			continue
		}
		start, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			continue
		}
		h := held{iv: interval{start: start}, expires: e.Expires}
		if i+1 < len(els) && els[i+1].IntervalEnd {
			h.iv.end, _ = netip.AddrFromSlice(els[i+1].Key)
			i++
		}
		out = append(out, h)
	}
	return out
}

// chunks splits els into groups small enough for one netlink message: a set
// element list is one attribute, whose length is 16 bits.
func chunks(els []nftables.SetElement) [][]nftables.SetElement {
	const per = 1024 // an IPv6 start with its timeout and end: under 64 bytes
	var out [][]nftables.SetElement
	for len(els) > per {
		out = append(out, els[:per])
		els = els[per:]
	}
	if len(els) > 0 {
		out = append(out, els)
	}
	return out
}
