package api

import (
	"strings"
	"testing"
)

func TestVisible(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "admin", "admin"},
		{"space and punctuation", "Jane Doe <jane@example.com>", "Jane Doe <jane@example.com>"},
		{"non-ASCII letters", "rémy ꮪ 管理", "rémy ꮪ 管理"},
		{"empty", "", ""},
		{"newline", "bob\ndoorman: unlock admin", `"bob\ndoorman: unlock admin"`},
		{"carriage return", "ok\rbanned", `"ok\rbanned"`},
		{"OSC 8 link", "\x1b]8;;http://evil\x07click\x1b]8;;\x07", `"\x1b]8;;http://evil\aclick\x1b]8;;\a"`},
		{"CSI", "\x1b[2J", `"\x1b[2J"`},
		{"DEL and C1", "a\x7fb\u009bc", `"a\x7fb\u009bc"`},
		{"right-to-left override", "adm\u202enimda", `"adm\u202enimda"`},
		{"tab", "a\tb", `"a\tb"`},
		{"invalid UTF-8", "a\xffb", `"a\xffb"`},
		{"a typed quote is not an escape", `say "hi"`, `"say \"hi\""`},
		{"a typed backslash-n is not a newline", `a\nb`, `"a\\nb"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Visible(tc.in)
			if got != tc.want {
				t.Errorf("Visible(%q) = %s, want %s", tc.in, got, tc.want)
			}
			if i := strings.IndexFunc(got, func(r rune) bool { return r < 0x20 || r >= 0x7f && r <= 0x9f || r == '\u202e' }); i >= 0 {
				t.Errorf("Visible(%q) = %q holds %q", tc.in, got, got[i])
			}
		})
	}
}
