package decide

import (
	"strings"
	"testing"
)

// FuzzParsePrefix checks that whatever parses is canonical: masked, unmapped,
// zone-free, and stable when printed and parsed again.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "10.1.2.3/8", "::ffff:1.2.3.4", "::ffff:1.2.3.0/120", "2001:db8::/32", "fe80::1%eth0", "1.2.3.4/33", " 1.2.3.4", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			if !strings.Contains(err.Error(), "is not an IP or CIDR") {
				t.Fatalf("error without the token: %v", err)
			}
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("ParsePrefix(%q) = %v: not canonical", s, p)
		}
		again, err := ParsePrefix(p.String())
		if err != nil || again != p {
			t.Fatalf("round trip of %v: %v, %v", p, again, err)
		}
	})
}

// FuzzReadList checks that a list file either parses into canonical prefixes
// or fails naming the file and line.
func FuzzReadList(f *testing.F) {
	f.Add("# comment\n10.0.0.0/8\n\n2001:db8::/32 # v6\n")
	f.Add("10.0.0.1\r\n10.0.0.2\r\n")
	f.Add("10.0.0.300\n")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ReadList("f.txt", strings.NewReader(s))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.txt:") {
				t.Fatalf("error without file name: %v", err)
			}
			return
		}
		for _, p := range got {
			if p != p.Masked() || p.Addr().Is4In6() {
				t.Fatalf("not canonical: %v", p)
			}
		}
		l := NewLists(got, got, nil)
		for _, p := range got {
			if !l.Denied(p.Addr()) || l.NotAllowed(p.Addr()) {
				t.Fatalf("%v parsed but not matched", p)
			}
		}
	})
}
