package decide

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/gaissmai/bart"
)

// Lists holds the allow, deny and never-ban tables. It is immutable once built
// and safe to share; a reload builds a new Lists and swaps it in whole.
type Lists struct {
	allow    *bart.Lite
	deny     *bart.Lite
	never    *bart.Lite
	allowSet bool // an empty DOORMAN_ALLOW means "everyone", not "no one"
	sizes    [3]int
}

// NewLists builds the tables. An empty allow list allows every address.
func NewLists(allow, deny, never []netip.Prefix) *Lists {
	l := &Lists{allow: new(bart.Lite), deny: new(bart.Lite), never: new(bart.Lite), allowSet: len(allow) > 0}
	for i, set := range [][]netip.Prefix{allow, deny, never} {
		t := [...]*bart.Lite{l.allow, l.deny, l.never}[i]
		for _, p := range set {
			t.Insert(p.Masked())
		}
		l.sizes[i] = t.Size()
	}
	return l
}

// Denied reports whether addr is in the deny list.
func (l *Lists) Denied(addr netip.Addr) bool { return l.deny.Lookup(addr) }

// NotAllowed reports whether an allow list is set and addr is outside it.
func (l *Lists) NotAllowed(addr netip.Addr) bool { return l.allowSet && !l.allow.Lookup(addr) }

// NeverBan reports whether addr is exempt from bans.
func (l *Lists) NeverBan(addr netip.Addr) bool { return l.never.Lookup(addr) }

// Sizes returns the number of prefixes in the allow, deny and never-ban lists.
func (l *Lists) Sizes() (allow, deny, never int) { return l.sizes[0], l.sizes[1], l.sizes[2] }

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
