package decide

import "net/netip"

// pkey is a prefix in 17 bytes with no pointers, the key of the ban and
// failure tables: a netip.Prefix is 32 bytes with a pointer, and these tables
// hold up to a million keys each. IPv4 is stored IPv4-mapped with 96 added to
// its length, so the two families never collide (the tables hold no
// IPv4-mapped IPv6 prefixes: addresses are unmapped at the boundary).
type pkey struct {
	addr [16]byte
	bits uint8
}

func keyOf(p netip.Prefix) pkey {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return pkey{addr: p.Addr().As16(), bits: uint8(bits)}
}

func (k pkey) prefix() netip.Prefix {
	a := netip.AddrFrom16(k.addr)
	if a.Is4In6() && k.bits >= 96 {
		return netip.PrefixFrom(a.Unmap(), int(k.bits)-96)
	}
	return netip.PrefixFrom(a, int(k.bits))
}
