package ui

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// TestHostilePage: a note, a username (learned from Redis or an old state
// file) and what a form sent are shown with their control and format
// characters escaped; html/template alone leaves a newline or a bidi
// override as it is.
func TestHostilePage(t *testing.T) {
	for _, h := range []struct{ name, s string }{
		{"newline", "bob\ndoorman: unlock admin"},
		{"OSC 8 link", "\x1b]8;;http://evil\x07click\x1b]8;;\x07"},
		{"carriage return", "bob\radmin"},
		{"right-to-left override", "adm\u202enimda"},
		{"DEL and C1", "a\x7fb\u009bc"},
	} {
		t.Run(h.name, func(t *testing.T) {
			f := newFixture(t, "s3cret")
			clock := func() time.Time { return f.now }
			acc, _, err := engine.NewAccounts(engine.AccountOptions{Policy: decide.AccountPolicy{MaxFailures: 1, FindTime: time.Hour,
				LockTime: 15 * time.Minute, LockFactor: 2, MaxLockTime: time.Hour, DeviceMaxFailures: 2}, Max: 100, Now: clock}, f.local)
			if err != nil {
				t.Fatal(err)
			}
			f.ui.o.Accounts = acc
			// The engine takes a username as given: the API normalises
			// and refuses; Redis or a state file may still hold one.
			if _, err := acc.FailAccount(context.Background(), h.s, "", f.now); err != nil {
				t.Fatal(err)
			}
			cookie, csrf := f.login(t)
			f.req("POST", "/ui/ban", cookie, "ip=192.0.2.7&duration=1h&note="+url.QueryEscape(h.s)+"&csrf="+csrf)
			pages := []string{f.req("GET", "/ui/", cookie, "").body}
			f.req("POST", "/ui/unban", cookie, "ip="+url.QueryEscape(h.s)+"&csrf="+csrf)
			pages = append(pages, f.req("GET", "/ui/", cookie, "").body)
			f.req("GET", "/ui/?ip="+url.QueryEscape(h.s), cookie, "")
			pages = append(pages, f.req("GET", "/ui/?ip="+url.QueryEscape(h.s), cookie, "").body)
			if !f.banned(t, "192.0.2.7") {
				t.Fatal("the ban with the note was not made")
			}
			for i, page := range pages {
				// The hidden unlock field gives the name back as it is, in
				// an attribute; everything else must be escaped.
				page = strings.ReplaceAll(page, `value="`+htmlAttr(h.s)+`"`, "")
				if j := strings.IndexFunc(page, func(r rune) bool {
					return r < 0x20 && r != '\n' || r >= 0x7f && r <= 0x9f || unicode.Is(unicode.Cf, r)
				}); j >= 0 {
					t.Errorf("page %d holds %q at %d: %q", i, page[j], j, page[max(0, j-80):min(len(page), j+80)])
				}
				if strings.Contains(page, h.s) {
					t.Errorf("page %d shows %q unescaped", i, h.s)
				}
			}
		})
	}
}

// htmlAttr is s as html/template writes it in an attribute value.
func htmlAttr(s string) string {
	return strings.NewReplacer("&", "&amp;", "'", "&#39;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "\x00", "\uFFFD", "+", "&#43;").Replace(s)
}
