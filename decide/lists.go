package decide

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/gaissmai/bart"
)

// Lists holds the allow, deny and never-ban tables, and the deny sources
// (feeds, denied countries and networks) with their names. It is immutable
// once built and safe to share; a reload builds a new Lists and swaps it in
// whole.
type Lists struct {
	allow    *bart.Lite
	deny     *bart.Lite
	never    *bart.Lite
	allowSet bool // an empty allow list means "everyone", not "no one"
	// notAllowed is the reason outside the allow list: Country when
	// allowed countries are part of it.
	notAllowed Reason
	// sourced maps each deny-source prefix to an index into names and
	// reasons; nil when there is no source, so the plain path costs nothing.
	sourced *bart.Table[uint32]
	names   []string
	reasons []Reason
	sizes   [3]int
	nsrc    int
}

// Source is one named deny list: a feed, a denied country's networks or a
// denied autonomous system's networks. Allowed countries are not a Source:
// their prefixes join Spec.Allow, with Spec.AllowCountries set.
type Source struct {
	Name     string // "spamhaus", "CN", "AS64500": what a denial names
	Reason   Reason // Feed, Country or ASN
	Prefixes []netip.Prefix
}

// Spec is everything a Lists is built from.
type Spec struct {
	Allow, Deny, Never []netip.Prefix
	// AllowCountries says Allow includes allowed countries' networks: a
	// denial outside it has reason Country, and the allow list is in force
	// even when no prefix was found for the countries (fail closed).
	AllowCountries bool
	Sources        []Source
}

// NewLists builds the tables. An empty allow list allows every address.
func NewLists(allow, deny, never []netip.Prefix) *Lists {
	return Build(Spec{Allow: allow, Deny: deny, Never: never})
}

// Build builds the tables of s. Where sources overlap, the most specific
// prefix names the denial; on equal prefixes the first source wins.
func Build(s Spec) *Lists {
	l := &Lists{allow: new(bart.Lite), deny: new(bart.Lite), never: new(bart.Lite),
		allowSet: len(s.Allow) > 0 || s.AllowCountries, notAllowed: NotAllowlisted}
	if s.AllowCountries {
		l.notAllowed = Country
	}
	for i, set := range [][]netip.Prefix{s.Allow, s.Deny, s.Never} {
		t := [...]*bart.Lite{l.allow, l.deny, l.never}[i]
		for _, p := range set {
			t.Insert(p.Masked())
		}
		l.sizes[i] = t.Size()
	}
	for _, src := range s.Sources {
		if len(src.Prefixes) == 0 {
			continue
		}
		if l.sourced == nil {
			l.sourced = new(bart.Table[uint32])
		}
		l.names = append(l.names, src.Name)
		l.reasons = append(l.reasons, src.Reason)
		idx := uint32(len(l.names) - 1)
		for _, p := range src.Prefixes {
			p = p.Masked()
			if _, dup := l.sourced.Get(p); !dup {
				l.sourced.Insert(p, idx)
			}
		}
	}
	if l.sourced != nil {
		l.nsrc = l.sourced.Size()
	}
	return l
}

// Denied reports whether addr is in the deny list.
func (l *Lists) Denied(addr netip.Addr) bool { return l.deny.Lookup(addr) }

// sourceDenied reports whether a deny source covers addr, with the reason
// and the source's name. A never-ban address is never denied by a source:
// a feed is someone else's list, and behind a proxy the exempt addresses
// are one's own.
func (l *Lists) sourceDenied(addr netip.Addr) (Reason, string, bool) {
	if l.sourced == nil {
		return 0, "", false
	}
	i, ok := l.sourced.Lookup(addr)
	if !ok || l.never.Lookup(addr) {
		return 0, "", false
	}
	return l.reasons[i], l.names[i], true
}

// SourceDenied is sourceDenied for callers outside the decision path.
func (l *Lists) SourceDenied(addr netip.Addr) (r Reason, name string, ok bool) {
	return l.sourceDenied(addr)
}

// NotAllowed reports whether an allow list is set and addr is outside it.
func (l *Lists) NotAllowed(addr netip.Addr) bool { return l.allowSet && !l.allow.Lookup(addr) }

// NeverBan reports whether addr is exempt from bans.
func (l *Lists) NeverBan(addr netip.Addr) bool { return l.never.Lookup(addr) }

// Sizes returns the number of prefixes in the allow, deny and never-ban lists.
func (l *Lists) Sizes() (allow, deny, never int) { return l.sizes[0], l.sizes[1], l.sizes[2] }

// Sourced returns the number of distinct prefixes over all deny sources.
func (l *Lists) Sourced() int { return l.nsrc }

// ParsePrefix parses an IP or a CIDR. A bare IP becomes a /32 or /128; IPv4-mapped
// IPv6 is unmapped and zones are refused, so the table never holds two spellings
// of one network. The host bits of a CIDR are cleared (10.1.2.3/8 is 10.0.0.0/8).
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP or CIDR", s)
		}
		if a := p.Addr(); a.Is4In6() {
			bits := p.Bits() - 96
			if bits < 0 {
				return netip.Prefix{}, fmt.Errorf("%q is not an IP or CIDR", s)
			}
			p = netip.PrefixFrom(a.Unmap(), bits)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseList parses a comma-separated list of IPs and CIDRs; blanks around
// entries and empty entries are ignored. The error quotes the bad entry.
func ParseList(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for tok := range strings.SplitSeq(s, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		p, err := ParsePrefix(tok)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ReadList reads one IP or CIDR per line; '#' starts a comment, blank lines are
// ignored. name is used in errors, which have the form "name:line: message".
func ReadList(name string, r io.Reader) ([]netip.Prefix, error) {
	var out []netip.Prefix
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		p, err := ParsePrefix(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, n, err)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	return out, nil
}
