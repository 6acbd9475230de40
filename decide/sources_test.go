package decide

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

func TestDecideSources(t *testing.T) {
	spec := Spec{
		Allow:          mustList(t, "192.0.2.0/24"),
		AllowCountries: true,
		Deny:           mustList(t, "198.51.100.0/28"),
		Never:          mustList(t, "203.0.113.7,198.51.100.1"),
		Sources: []Source{
			{Name: "spamhaus", Reason: Feed, Prefixes: mustList(t, "203.0.113.0/24,198.51.100.0/24,2001:db8:bad::/48")},
			{Name: "firehol", Reason: Feed, Prefixes: mustList(t, "203.0.113.0/24,203.0.113.128/25")},
			{Name: "AS64500", Reason: ASN, Prefixes: mustList(t, "192.0.2.128/25")},
			{Name: "empty", Reason: Feed},
		},
	}
	// The allowed countries' networks join the allow list.
	spec.Allow = append(spec.Allow, mustList(t, "203.0.113.0/24,198.51.100.0/24,2001:db8::/32")...)
	c := New(defaultPolicy(), Build(spec), 100, 100)
	if _, _, err := c.BanPrefix(netip.MustParsePrefix("203.0.113.7/32"), time.Hour, "", t0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ip     string
		allow  bool
		want   Reason
		source string
	}{
		{"203.0.113.1", false, Feed, "spamhaus"},        // first source wins on equal prefixes
		{"203.0.113.200", false, Feed, "firehol"},       // most specific wins
		{"198.51.100.2", false, Denylisted, ""},         // the deny list comes first
		{"198.51.100.1", false, Denylisted, ""},         // never-ban does not exempt from the deny list
		{"203.0.113.7", true, Allowed, ""},              // never-ban: no feed, no ban
		{"192.0.2.200", false, ASN, "AS64500"},          // a denied network inside the allow list
		{"192.0.2.1", true, Allowed, ""},                // allow list
		{"2001:db8:bad::1", false, Feed, "spamhaus"},    // IPv6
		{"::ffff:203.0.113.1", false, Feed, "spamhaus"}, // unmapped first
		{"100.64.0.1", false, Country, ""},              // outside the allowed countries
		{"2001:db9::1", false, Country, ""},             // same, IPv6
		{"2001:db8:1::1", true, Allowed, ""},            // an allowed country's network
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			got := c.Decide(netip.MustParseAddr(tc.ip), t0.Add(time.Minute))
			if got.Allow != tc.allow || got.Reason != tc.want || got.Source != tc.source {
				t.Errorf("Decide(%s) = %v/%v/%q, want %v/%v/%q", tc.ip, got.Allow, got.Reason, got.Source, tc.allow, tc.want, tc.source)
			}
		})
	}
	if got := c.Lists().Sourced(); got != 5 {
		t.Errorf("Sourced() = %d, want 5 distinct prefixes", got)
	}
}

// TestAllowCountriesFailsClosed: allowed countries for which the database
// holds no network deny everyone outside DOORMAN_ALLOW; they never open the
// gate.
func TestAllowCountriesFailsClosed(t *testing.T) {
	c := New(defaultPolicy(), Build(Spec{AllowCountries: true}), 10, 10)
	if v := c.Decide(netip.MustParseAddr("192.0.2.1"), t0); v.Allow || v.Reason != Country {
		t.Errorf("Decide = %v/%v, want deny/country", v.Allow, v.Reason)
	}
}

// TestSourcesGolden compares the source lookup with a linear scan over
// random overlapping feeds.
func TestSourcesGolden(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 42))
	var srcs []Source
	for i := range 4 {
		s := Source{Name: string(rune('a' + i)), Reason: Feed}
		for range 300 {
			a := netip.AddrFrom4([4]byte{192, 0, byte(r.IntN(4)), byte(r.IntN(256))})
			s.Prefixes = append(s.Prefixes, netip.PrefixFrom(a, 22+r.IntN(11)).Masked())
		}
		srcs = append(srcs, s)
	}
	l := Build(Spec{Sources: srcs})
	slow := func(a netip.Addr) (string, bool) {
		best, name := -1, ""
		for _, s := range srcs {
			for _, p := range s.Prefixes {
				if p.Contains(a) && p.Bits() > best {
					best, name = p.Bits(), s.Name
				}
			}
		}
		return name, best >= 0
	}
	for range 5000 {
		a := netip.AddrFrom4([4]byte{192, 0, byte(r.IntN(5)), byte(r.IntN(256))})
		_, got, gok := l.SourceDenied(a)
		want, wok := slow(a)
		if got != want || gok != wok {
			t.Fatalf("SourceDenied(%s) = %q/%v, want %q/%v", a, got, gok, want, wok)
		}
	}
}

func TestDecideWithSourcesDoesNotAllocate(t *testing.T) {
	c := New(defaultPolicy(), Build(Spec{Sources: []Source{{Name: "f", Reason: Feed, Prefixes: mustList(t, "192.0.2.0/24")}}}), 10, 10)
	for _, a := range []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")} {
		if n := testing.AllocsPerRun(1000, func() { c.Decide(a, t0) }); n != 0 {
			t.Errorf("Decide(%s): %v allocs, want 0", a, n)
		}
	}
}

// TestRangeFollowsNetwork: with SetNetworks, range escalation bans the
// announced network, clamped to [/16, the fixed range prefix] (IPv6:
// [/32, fixed]).
func TestRangeFollowsNetwork(t *testing.T) {
	nets := mustList(t, "198.51.96.0/20,203.0.113.0/28,192.0.0.0/8,2001:db8::/30,2001:db8:8000::/40")
	for _, tc := range []struct {
		name string
		ips  []string
		want string
	}{
		{"announced /20", []string{"198.51.100.1", "198.51.101.1", "198.51.99.1"}, "198.51.96.0/20"},
		{"narrower than the fixed /24", []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"}, "203.0.113.0/24"},
		{"wider than /16 is clamped", []string{"192.0.2.1", "192.0.3.1", "192.0.4.1"}, "192.0.0.0/16"},
		{"no network known", []string{"100.64.0.1", "100.64.0.2", "100.64.0.3"}, "100.64.0.0/24"},
		{"ipv6 /30 clamped to /32", []string{"2001:db8:1::1", "2001:db8:2::1", "2001:db8:3::1"}, "2001:db8::/32"},
		{"ipv6 /40", []string{"2001:db8:8000:1::1", "2001:db8:8001::1", "2001:db8:80ff::1"}, "2001:db8:8000::/40"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := defaultPolicy()
			p.RangeThreshold, p.IPv4RangePrefix, p.IPv6RangePrefix = 3, 24, 48
			c := New(p, nil, 100, 100)
			c.SetNetworks(func(a netip.Addr) netip.Prefix {
				best := netip.Prefix{}
				for _, n := range nets {
					if n.Contains(a) && n.Bits() > best.Bits() {
						best = n
					}
				}
				return best
			})
			var res FailResult
			for _, ip := range tc.ips {
				res = failBan(t, c, ip, t0)
			}
			if !res.Range || res.Ban.Key.String() != tc.want {
				t.Fatalf("third unit ban: range %v key %s, want a range ban of %s", res.Range, res.Ban.Key, tc.want)
			}
		})
	}
}
