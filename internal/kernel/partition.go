package kernel

import (
	"cmp"
	"net/netip"
	"slices"
)

// span is one ban as the kernel sees it: a prefix and the end of its ban in
// unix nanoseconds. An element of a set is a span too.
type span struct {
	p     netip.Prefix
	until int64
}

// partition turns the bans inside region (nested or disjoint, as CIDR
// prefixes are; expired ones already left out) into disjoint elements for an
// interval set, where an address is in an element until the latest end of the
// bans covering it. An interval set refuses overlapping elements, so a ban
// that outlasts the one around it is cut out of it: the outer ban becomes the
// pieces around the inner one, each piece ending when the outer ban ends. A
// nested ban that ends no later than the one around it adds nothing.
func partition(region netip.Prefix, bans []span) []span {
	slices.SortFunc(bans, func(a, b span) int {
		if c := a.p.Addr().Compare(b.p.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.p.Bits(), b.p.Bits())
	})
	var out []span
	emit(region, 0, bans, &out)
	slices.SortFunc(out, func(a, b span) int { return a.p.Addr().Compare(b.p.Addr()) })
	return out
}

// emit appends the elements of p, where e (0: none) is the latest end of the
// bans covering all of p, and ds are the bans inside p, sorted, p's own
// record excluded or included.
func emit(p netip.Prefix, e int64, ds []span, out *[]span) {
	if len(ds) > 0 && ds[0].p == p {
		e = max(e, ds[0].until)
		ds = ds[1:]
	}
	var kids []netip.Prefix
	for i := 0; i < len(ds); {
		c := ds[i]
		if c.until <= e {
			i++ // hidden by the ban around it; its own bans are p's to place
			continue
		}
		j := i + 1
		for j < len(ds) && c.p.Contains(ds[j].p.Addr()) {
			j++
		}
		kids = append(kids, c.p)
		emit(c.p, e, ds[i:j], out)
		i = j
	}
	if e == 0 {
		return
	}
	for _, q := range complement(p, kids) {
		*out = append(*out, span{q, e})
	}
}

// complement returns the prefixes that cover p but none of kids (disjoint
// prefixes inside p, sorted).
func complement(p netip.Prefix, kids []netip.Prefix) []netip.Prefix {
	if len(kids) == 0 {
		return []netip.Prefix{p}
	}
	if kids[0] == p {
		return nil
	}
	lo, hi := halves(p)
	i := 0
	for i < len(kids) && lo.Contains(kids[i].Addr()) {
		i++
	}
	return append(complement(lo, kids[:i]), complement(hi, kids[i:])...)
}

// halves splits p (not a single address) into its two halves.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	a := p.Addr().As16()
	i := p.Bits()
	if p.Addr().Is4() {
		i += 96
	}
	a[i/8] |= 0x80 >> (i % 8)
	hiAddr := netip.AddrFrom16(a)
	if p.Addr().Is4() {
		hiAddr = hiAddr.Unmap()
	}
	return lo, netip.PrefixFrom(hiAddr, bits)
}
