package lists

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"

	"github.com/doorman/doorman/decide"
)

// Parsed is a feed's content: the prefixes it denies and what was left out.
type Parsed struct {
	Prefixes  []netip.Prefix
	Wide      int // entries wider than /8 (IPv4) or /32 (IPv6), skipped
	Local     int // entries in loopback, private or link-local ranges, skipped
	Malformed int // lines that hold no address or CIDR, skipped
	Cut       int // entries beyond the limit, left out
}

// Skipped is every entry left out.
func (p Parsed) Skipped() int { return p.Wide + p.Local + p.Malformed + p.Cut }

// local are the ranges a feed never denies: behind a proxy, addresses in
// them are the operator's own clients and proxies (FireHOL level 1 lists
// them as bogons).
var local = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
}

// maxLine is the longest line read; a longer one is malformed.
const maxLine = 4096

// Parse reads a feed: one address or CIDR per line, first on the line;
// '#' and ';' start comments, and anything after the first field is ignored
// (Spamhaus DROP's "; SBL123", FireHOL's netsets, plain lists). At most max
// prefixes are kept. It fails only when the feed cannot be read, or when it
// is not a list at all: more malformed lines than entries (an HTML error
// page served with 200, a login wall).
func Parse(r io.Reader, max int) (Parsed, error) {
	var out Parsed
	br := bufio.NewReaderSize(r, 64<<10)
	lines := 0
	for {
		line, err := readLine(br)
		if err == io.EOF {
			break
		}
		if err == errLong {
			out.Malformed++
			lines++
			continue
		}
		if err != nil {
			return Parsed{}, err
		}
		lines++
		if i := bytes.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := bytes.Fields(line)
		if len(f) == 0 {
			continue
		}
		p, perr := decide.ParsePrefix(string(f[0]))
		switch {
		case perr != nil:
			out.Malformed++
		case wide(p):
			out.Wide++
		case isLocal(p):
			out.Local++
		case len(out.Prefixes) >= max:
			out.Cut++
		default:
			out.Prefixes = append(out.Prefixes, p)
		}
	}
	entries := len(out.Prefixes) + out.Wide + out.Local + out.Cut
	if out.Malformed > entries {
		return Parsed{}, fmt.Errorf("not a list of addresses: %d of %d lines malformed", out.Malformed, lines)
	}
	return out, nil
}

var errLong = fmt.Errorf("line longer than %d bytes", maxLine)

// readLine returns the next line without its end; a line longer than
// maxLine is consumed and reported as errLong.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > maxLine {
		for err == bufio.ErrBufferFull {
			_, err = br.ReadSlice('\n')
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		return nil, errLong
	}
	if err == io.EOF && len(line) > 0 {
		err = nil
	}
	return bytes.TrimRight(line, "\r\n"), err
}

func wide(p netip.Prefix) bool {
	if p.Addr().Is4() {
		return p.Bits() < decide.WidestIPv4
	}
	return p.Bits() < decide.WidestIPv6
}

func isLocal(p netip.Prefix) bool {
	for _, l := range local {
		if l.Overlaps(p) {
			return true
		}
	}
	return false
}
