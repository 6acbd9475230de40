package decide

import (
	"net/netip"
	"testing"
)

func FuzzKeyRoundTrip(f *testing.F) {
	for _, s := range []string{"0.0.0.0/0", "192.0.2.1/32", "10.0.0.0/8", "::/0", "2001:db8::/64", "2001:db8::1/128", "::ffff:0:0/96"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			return
		}
		if got := keyOf(p).prefix(); got != p {
			t.Fatalf("keyOf(%v).prefix() = %v", p, got)
		}
	})
}

func TestKeyFamiliesDoNotCollide(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("1.2.3.4/32"), netip.MustParsePrefix("::102:304/128")
	if keyOf(v4) == keyOf(v6) {
		t.Fatal("1.2.3.4/32 and ::102:304/128 share a key")
	}
}
