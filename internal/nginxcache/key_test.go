package nginxcache

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/doorman/doorman/decide"
)

// nginxSpellings are addresses and how nginx 1.22.1 wrote them in
// $remote_addr (taken through set_real_ip_from and X-Real-IP).
var nginxSpellings = []struct{ in, nginx string }{
	{"::", "::"},
	{"::1", "::1"},
	{"::2", "::2"},
	{"::ffff", "::0.0.255.255"},
	{"::1:0", "::0.1.0.0"},
	{"::1:2", "::0.1.0.2"},
	{"::ff:ff", "::0.255.0.255"},
	{"::ffff:0", "::255.255.0.0"},
	{"::1:ffff", "::0.1.255.255"},
	{"::ffff:0:0", "::ffff:0.0.0.0"},
	{"::ffff:1.2.3.4", "::ffff:1.2.3.4"},
	{"::1.2.3.4", "::1.2.3.4"},
	{"::0.0.0.255", "::ff"},
	{"0:0:0:0:0:fffe:102:304", "::fffe:102:304"},
	{"0:0:0:0:1:ffff:102:304", "::1:ffff:102:304"},
	{"1::", "1::"},
	{"1::1", "1::1"},
	{"1:0:0:2:0:0:0:3", "1:0:0:2::3"},
	{"1:0:0:0:2:0:0:3", "1::2:0:0:3"},
	{"1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"},
	{"1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"},
	{"1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0"},
	{"0:1:2:3:4:5:6:7", "0:1:2:3:4:5:6:7"},
	{"2001:db8::", "2001:db8::"},
	{"2001:db8:0:0:1::1", "2001:db8::1:0:0:1"},
	{"fe80::1", "fe80::1"},
	{"ff02::1:ff00:1", "ff02::1:ff00:1"},
	{"64:ff9b::1.2.3.4", "64:ff9b::102:304"},
	{"2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"},
	{"0:0:1::", "0:0:1::"},
	{"0:0:0:1::", "0:0:0:1::"},
	{"::1:0:0:0", "::1:0:0:0"},
	{"1:2::", "1:2::"},
	{"0:0:0:0:0:1:0:1", "::1:0:1"},
	{"0:0:0:0:0:0:0:100", "::0.0.1.0"},
	{"::a00:1", "::10.0.0.1"},
	{"::ffff:a00:1", "::ffff:10.0.0.1"},
	{"100::", "100::"},
	{"::100:0", "::1.0.0.0"},
	{"0:0:0:0:0:0:100:1", "::1.0.0.1"},
	{"::fffe:0:0", "::fffe:0:0"},
	{"::1:0:0", "::1:0:0"},
	{"0:0:0:0:ffff::", "::ffff:0:0:0"},
	{"::ffff:ffff:ffff", "::ffff:255.255.255.255"},
	{"192.0.2.1", "192.0.2.1"},
	{"0.0.0.0", "0.0.0.0"},
	{"255.255.255.255", "255.255.255.255"},
}

func TestKeyWritesAsNginx(t *testing.T) {
	for _, tc := range nginxSpellings {
		t.Run(tc.in, func(t *testing.T) {
			a := netip.MustParseAddr(tc.in)
			k := Key{addr: a.As16(), is4: a.Is4()}
			if got := k.String(); got != tc.nginx {
				t.Errorf("Key(%s) = %q, want nginx's %q", tc.in, got, tc.nginx)
			}
			got, ok := KeyFor(decide.Clean(a), []byte(tc.nginx))
			if !ok || got != k {
				t.Errorf("KeyFor(%s, %q) = %v, %v; want %v, true", decide.Clean(a), tc.nginx, got, ok, k)
			}
		})
	}
}

func TestKeyFor(t *testing.T) {
	cases := []struct {
		name, addr, raw string
		ok              bool
		want            string
	}{
		{"ipv4", "192.0.2.1", "192.0.2.1", true, "192.0.2.1"},
		{"ipv4 mapped, dual-stack listener", "192.0.2.1", "::ffff:192.0.2.1", true, "::ffff:192.0.2.1"},
		{"ipv4 mapped in hex", "192.0.2.1", "::ffff:c000:201", false, ""},
		{"ipv4 mapped upper case", "192.0.2.1", "::FFFF:192.0.2.1", false, ""},
		{"ipv6", "2001:db8::1", "2001:db8::1", true, "2001:db8::1"},
		{"ipv6 upper case", "2001:db8::1", "2001:DB8::1", false, ""},
		{"ipv6 leading zeros", "2001:db8::1", "2001:0db8::1", false, ""},
		{"ipv6 uncompressed", "2001:db8::1", "2001:db8:0:0:0:0:0:1", false, ""},
		{"ipv6 as go writes it, not nginx", "::1:2", "::1:2", false, ""},
		{"ipv6 as nginx writes it", "::1:2", "::0.1.0.2", true, "::0.1.0.2"},
		{"other address", "192.0.2.1", "192.0.2.2", false, ""},
		{"trailing space", "192.0.2.1", "192.0.2.1 ", false, ""},
		{"empty", "192.0.2.1", "", false, ""},
		{"zone", "fe80::1%eth0", "fe80::1%eth0", false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, ok := KeyFor(netip.MustParseAddr(tc.addr), []byte(tc.raw))
			if ok != tc.ok {
				t.Fatalf("KeyFor(%s, %q) ok = %v, want %v", tc.addr, tc.raw, ok, tc.ok)
			}
			if ok && k.String() != tc.want {
				t.Errorf("KeyFor(%s, %q) = %q, want %q", tc.addr, tc.raw, k, tc.want)
			}
			if ok && k.Addr() != netip.MustParseAddr(tc.addr) {
				t.Errorf("Key %q Addr() = %s, want %s", k, k.Addr(), tc.addr)
			}
		})
	}
	if _, ok := KeyFor(netip.Addr{}, nil); ok {
		t.Error("KeyFor(invalid address) ok, want refused")
	}
}

// Every address, written as nginx writes it, parses back to itself, and
// KeyFor accepts that writing.
func TestKeyRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 42))
	for range 100000 {
		var b [16]byte
		for i := range b {
			// Mostly zero bytes, so zero runs of every length occur.
			if r.IntN(3) == 0 {
				b[i] = byte(r.Uint32())
			}
		}
		a := netip.AddrFrom16(b)
		k := Key{addr: b}
		s := k.String()
		back, err := netip.ParseAddr(s)
		if err != nil || back != a {
			t.Fatalf("Key %s written %q, parsed back as %v, %v", a, s, back, err)
		}
		if got, ok := KeyFor(decide.Clean(a), []byte(s)); !ok || got != k {
			t.Fatalf("KeyFor(%s, %q) = %v, %v; want %v, true", decide.Clean(a), s, got, ok, k)
		}
	}
}

func TestKeyForAllocs(t *testing.T) {
	a, raw := netip.MustParseAddr("2001:db8::1:0:0:1"), []byte("2001:db8::1:0:0:1")
	if n := testing.AllocsPerRun(1000, func() { KeyFor(a, raw) }); n != 0 {
		t.Errorf("KeyFor allocates %v times per call, want 0", n)
	}
}

// FuzzKeyFor: whatever the header, a key is accepted only when it writes back
// to the very bytes received and names the address they parse to.
func FuzzKeyFor(f *testing.F) {
	for _, tc := range nginxSpellings {
		f.Add(tc.nginx)
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		a, err := netip.ParseAddr(raw)
		if err != nil {
			return
		}
		c := decide.Clean(a)
		k, ok := KeyFor(c, []byte(raw))
		if !ok {
			if a.Zone() == "" && (KeyOf(c).String() == raw) {
				t.Fatalf("KeyFor(%s, %q) refused nginx's own writing", c, raw)
			}
			return
		}
		if got := k.String(); got != raw {
			t.Fatalf("KeyFor(%s, %q) accepted a key written %q", c, raw, got)
		}
		if k.Addr() != c {
			t.Fatalf("KeyFor(%s, %q) names %s", c, raw, k.Addr())
		}
	})
}
