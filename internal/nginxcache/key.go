package nginxcache

import (
	"bytes"
	"net/netip"
	"strconv"
)

// Key is a client address as nginx writes it in $remote_addr, the key of its
// cache entry for that client. One address can have two keys: an IPv4 client
// of an IPv4 listener is 192.0.2.1, the same client of a dual-stack listener
// ::ffff:192.0.2.1. The zero Key is not valid.
type Key struct {
	addr [16]byte // As16 of the address: an IPv4 address in its IPv4-mapped form
	is4  bool     // written a.b.c.d; else written as IPv6
}

// KeyOf is the key of the clean address a as an IPv4 or IPv6 listener writes
// it (never the ::ffff: form).
func KeyOf(a netip.Addr) Key { return Key{addr: a.As16(), is4: a.Is4()} }

// KeyFor returns the key nginx sent as raw, the X-Real-IP header that parsed
// to the clean address a, and reports whether raw is exactly nginx's writing
// of a (or, for IPv4, of ::ffff:a). Any other spelling of the same address —
// upper case, leading zeros, another IPv6 compression — would name a cache
// entry doorman cannot write back, so it is refused. It does not allocate.
func KeyFor(a netip.Addr, raw []byte) (Key, bool) {
	if !a.IsValid() || a.Zone() != "" {
		return Key{}, false
	}
	var buf [64]byte
	k := KeyOf(a)
	if bytes.Equal(k.Append(buf[:0]), raw) {
		return k, true
	}
	if k.is4 {
		k.is4 = false
		if bytes.Equal(k.Append(buf[:0]), raw) {
			return k, true
		}
	}
	return Key{}, false
}

// Addr is the clean address the key names: the IPv4 address for both of its
// spellings.
func (k Key) Addr() netip.Addr {
	a := netip.AddrFrom16(k.addr)
	if k.is4 || a.Is4In6() {
		return a.Unmap()
	}
	return a
}

// String is the key as nginx writes it.
func (k Key) String() string {
	var buf [64]byte
	return string(k.Append(buf[:0]))
}

// Append appends the key as nginx writes it: IPv4 in dotted decimal, IPv6 as
// ngx_inet6_ntop (src/core/ngx_inet.c) does. That differs from RFC 5952,
// netip.Addr.String and inet_ntop in one way: an address whose first six
// 16-bit groups are zero, and the IPv4-mapped ones, end in dotted decimal
// (::0.1.0.2 for ::1:2, ::10.0.0.1 for ::a00:1; but ::1 and ::ff stay). The
// longest run of at least two zero groups is compressed, the first of equal
// runs; hex is lower case without leading zeros.
func (k Key) Append(b []byte) []byte {
	p := k.addr
	if k.is4 {
		return appendDotted(b, p[12:])
	}
	// The longest run of zero groups, first wins; runs of one stay.
	zero, max, n, last := -1, 1, 0, -1
	for i := 0; i < 16; i += 2 {
		if p[i] != 0 || p[i+1] != 0 {
			if max < n {
				zero, max = last, n
			}
			n = 0
			continue
		}
		if n == 0 {
			last = i
		}
		n++
	}
	if max < n {
		zero, max = last, n
	}
	end := 16
	if zero == 0 {
		if max == 5 && p[10] == 0xff && p[11] == 0xff || max == 6 || max == 7 && p[14] != 0 && p[15] != 1 {
			end = 12
		}
		b = append(b, ':')
	}
	for i := 0; i < end; i += 2 {
		if i == zero {
			b = append(b, ':')
			i += (max - 1) * 2
			continue
		}
		b = strconv.AppendUint(b, uint64(p[i])<<8|uint64(p[i+1]), 16)
		if i < 14 {
			b = append(b, ':')
		}
	}
	if end == 12 {
		b = appendDotted(b, p[12:])
	}
	return b
}

func appendDotted(b []byte, v4 []byte) []byte {
	for i, x := range v4[:4] {
		if i > 0 {
			b = append(b, '.')
		}
		b = strconv.AppendUint(b, uint64(x), 10)
	}
	return b
}
