package api

import (
	"errors"
	"strconv"
	"testing"
	"unicode/utf8"
)

// FuzzVisible: what Visible returns is printable and gives back s: s itself,
// or its quoted form.
func FuzzVisible(f *testing.F) {
	for _, s := range []string{"admin", "", "a\nb", "\x1b]8;;http://evil\x07", "adm\u202enimda", `"q"`, `a\nb`, "\xff", "a\x7f\u009b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Visible(s)
		if !Printable(got) {
			t.Fatalf("Visible(%q) = %q: not printable", s, got)
		}
		if got == s {
			return
		}
		back, err := strconv.Unquote(got)
		if err != nil {
			t.Fatalf("Visible(%q) = %q: %v", s, got, err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("Visible(%q) = %q reads back as %q", s, got, back)
		}
	})
}

// FuzzParseBan: a ban that parses is masked, within the bounds, with its
// note; one that does not names its field, and its message is printable.
func FuzzParseBan(f *testing.F) {
	f.Add("192.0.2.7", "1h", "note")
	f.Add("198.51.100.9/24", "", "")
	f.Add("::ffff:192.0.2.7/120", "87600h", "")
	f.Add("fe80::1%eth0", "1ns", "\n")
	f.Add("", "-1s", "")
	f.Fuzz(func(t *testing.T, ip, duration, note string) {
		b, err := ParseBan(ip, duration, note)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "ip" && fe.Field != "duration" && fe.Field != "reason" {
				t.Fatalf("ParseBan(%q, %q, %q): %v, not a field error", ip, duration, note, err)
			}
			if fe.Field != "reason" && !Printable(err.Error()) && utf8.ValidString(ip+duration) {
				t.Fatalf("ParseBan(%q, %q, %q): unprintable error %q", ip, duration, note, err)
			}
			return
		}
		if !b.Prefix.IsValid() || b.Prefix != b.Prefix.Masked() || b.Prefix.Addr().Is4In6() || b.Prefix.Addr().Zone() != "" {
			t.Fatalf("ParseBan(%q) = %v: not a masked, unmapped prefix", ip, b.Prefix)
		}
		if b.Duration != 0 && (b.Duration < MinManualBan || b.Duration > MaxManualBan) || len(b.Note) > MaxNote || b.Note != note {
			t.Fatalf("ParseBan(%q, %q, %q) = %+v: out of bounds", ip, duration, note, b)
		}
	})
}

// FuzzParseUnban: an unban names an address or a masked prefix, never both.
func FuzzParseUnban(f *testing.F) {
	for _, s := range []string{"192.0.2.7", "10.0.0.0/8", "2001:db8::/32", "::ffff:10.0.0.0/104", "fe80::1%eth0", "x/y", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUnban(s)
		if err != nil {
			return
		}
		if u.Addr.IsValid() == u.Prefix.IsValid() {
			t.Fatalf("ParseUnban(%q) = %+v: not one of an address and a prefix", s, u)
		}
		if u.Prefix.IsValid() && u.Prefix != u.Prefix.Masked() {
			t.Fatalf("ParseUnban(%q) = %v: not masked", s, u.Prefix)
		}
		if u.Addr.Zone() != "" {
			t.Fatalf("ParseUnban(%q) = %v: a zone", s, u.Addr)
		}
	})
}
