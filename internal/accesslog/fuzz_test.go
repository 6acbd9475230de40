package accesslog

import (
	"net/netip"
	"testing"

	"github.com/gaissmai/bart"
)

// FuzzParse: no datagram crashes the parser, a record it accepts has a valid
// client and a status code, and Match never panics on it.
func FuzzParse(f *testing.F) {
	for _, s := range []string{nginxRecord, caddy("127.0.0.1", `["203.0.113.5, 127.0.0.2"]`), caddy("192.0.2.1", ""),
		`<134>1 2026-12-03T09:04:39Z h haproxy 1 - [a b="c"] {"client":"::1","method":"POST","uri":"/%2e/login","status":"401"}`,
		`{"client":"192.0.2.1","method":"POST","uri":"/a\ud800","status":200}`} {
		f.Add([]byte(s))
	}
	trusted := new(bart.Lite)
	trusted.Insert(netip.MustParsePrefix("127.0.0.0/8"))
	rs, err := ParseRules("django /admin/login/; wordpress h.example/wp-login.php; status /login")
	if err != nil {
		f.Fatal(err)
	}
	p := &Parser{Trusted: trusted}
	f.Fuzz(func(t *testing.T, d []byte) {
		var r Record
		why := p.Parse(d, &r)
		if why != OK {
			return
		}
		if !r.Client.IsValid() || r.Client.Is4In6() || r.Status < 100 || r.Status > 999 {
			t.Fatalf("accepted %q with client %v status %d", d, r.Client, r.Status)
		}
		rs.Match(&r, nil)
	})
}

// FuzzCleanPath: the cleaned path is absolute, has no empty, "." or ".."
// segment inside, and cleaning it again changes nothing.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "//a/./b/..", "/%2e%2e/%2F", "http://h/x?y", "/a/b/"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, uri []byte) {
		got, ok := CleanPath(uri, nil)
		if !ok {
			return
		}
		if len(got) == 0 || got[0] != '/' {
			t.Fatalf("CleanPath(%q) = %q: not absolute", uri, got)
		}
		for _, bad := range []string{"//", "/./", "/../"} {
			if indexOf(got, bad) >= 0 {
				t.Fatalf("CleanPath(%q) = %q: holds %q", uri, got, bad)
			}
		}
		// Escapes were decoded once; a decoded "%" may form a new one and a
		// decoded "?" or "#" would end the path, so compare only where none
		// is left.
		if indexAny(got, '%', '?') < 0 && indexByte(got, '#') < 0 {
			again, ok := CleanPath(got, nil)
			if !ok || string(again) != string(got) {
				t.Fatalf("CleanPath(%q) = %q, again %q", uri, got, again)
			}
		}
	})
}
