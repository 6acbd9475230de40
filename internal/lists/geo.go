package lists

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Place is what the databases say of one address, for doorman check and
// the status page. Zero fields are unknown.
type Place struct {
	Country string       // ISO code
	ASN     uint32       // autonomous system number
	Org     string       // the autonomous system's organisation
	Network netip.Prefix // the announced network holding the address (ASN database)
}

// openDB reads an .mmdb file. The caller walks every network once
// (networks), so a truncated or corrupt tree is refused at load rather
// than found at a lookup; the metadata checks of Reader.Verify are not
// applied, since some publishers' files fail them and read fine. The file is
// read into memory rather than mapped: a database rewritten in place (not
// replaced by rename) must not change, or fault, the copy in use.
func openDB(path string) (*maxminddb.Reader, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, err := maxminddb.OpenBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return r, nil
}

// countryOf reads the country code of a record: MaxMind and DB-IP keep it
// at country.iso_code, IPinfo at country_code.
func countryOf(res maxminddb.Result) string {
	var cc string
	if res.DecodePath(&cc, "country", "iso_code") == nil && cc != "" {
		return strings.ToUpper(cc)
	}
	if res.DecodePath(&cc, "country_code") == nil {
		return strings.ToUpper(cc)
	}
	return ""
}

// asnOf reads the AS number and organisation: MaxMind and DB-IP keep them
// as autonomous_system_number and autonomous_system_organization, IPinfo as
// asn ("AS64500") and as_name.
func asnOf(res maxminddb.Result) (uint32, string) {
	var n uint64
	var org string
	if res.DecodePath(&n, "autonomous_system_number") == nil && n > 0 {
		_ = res.DecodePath(&org, "autonomous_system_organization")
		return uint32(n), org
	}
	var s string
	if res.DecodePath(&s, "asn") == nil {
		if v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToUpper(s), "AS"), 10, 32); err == nil {
			_ = res.DecodePath(&org, "as_name")
			return uint32(v), org
		}
	}
	return 0, ""
}

// clean is a database network as the lists hold it: an IPv4 network seen
// through the IPv6 tree is unmapped.
func clean(p netip.Prefix) (netip.Prefix, bool) {
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, false
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), p.IsValid()
}

// networks walks every network of r once and returns, for each wanted key
// (a country code or an AS number), the networks the database gives it.
// Records are decoded once per data offset: most networks share one.
func networks[K comparable](r *maxminddb.Reader, want []K, key func(maxminddb.Result) K) (map[K][]netip.Prefix, error) {
	out := make(map[K][]netip.Prefix, len(want))
	seen := map[uintptr]K{}
	for res := range r.Networks() {
		if err := res.Err(); err != nil {
			return nil, err
		}
		k, ok := seen[res.Offset()]
		if !ok {
			k = key(res)
			seen[res.Offset()] = k
		}
		if !slices.Contains(want, k) {
			continue
		}
		if p, ok := clean(res.Prefix()); ok {
			out[k] = append(out[k], p)
		}
	}
	return out, nil
}

// locate looks a up in the databases held (either may be nil).
func locate(country, asn *maxminddb.Reader, a netip.Addr) Place {
	var pl Place
	if country != nil {
		if res := country.Lookup(a); res.Found() {
			pl.Country = countryOf(res)
		}
	}
	if asn != nil {
		if res := asn.Lookup(a); res.Found() {
			pl.ASN, pl.Org = asnOf(res)
			pl.Network, _ = clean(res.Prefix())
		}
	}
	return pl
}
