package ui

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/doorman/doorman/decide"
)

// TestPageFeeds: the page lists the feeds and names the feed and the place
// of an explained address; an error text from a hostile feed server is
// escaped.
func TestPageFeeds(t *testing.T) {
	f := newFixture(t, "")
	f.local.SetLists(decide.Build(decide.Spec{Sources: []decide.Source{{Name: "spamhaus", Reason: decide.Feed,
		Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}}}))
	f.ui.o.Feeds = func() []Feed {
		return []Feed{{Name: "spamhaus", URL: "https://feeds.example/drop.txt", Prefixes: 1, Skipped: 2, Verified: t0},
			{Name: "peer", URL: "http://192.0.2.10/v1/feed", Error: `http://192.0.2.10 answered <script>alert(1)</script>`}}
	}
	f.ui.o.Locate = func(a netip.Addr) Place {
		return Place{Country: "DE", ASN: "AS64500", Org: "Example <Hosting>", Network: "203.0.113.0/24"}
	}
	body := f.req("GET", "/ui/", "", "").body
	for _, want := range []string{"<h2>Deny feeds</h2>", "<code>spamhaus</code>", "https://feeds.example/drop.txt",
		"&lt;script&gt;alert(1)&lt;/script&gt;", "never"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>alert") {
		t.Errorf("a feed error reached the page unescaped")
	}
	body = f.req("GET", "/ui/?ip=203.0.113.5", "", "").body
	for _, want := range []string{"is <b>denied</b> (feed)", "Listed by the feed <code>spamhaus</code>",
		"Country DE, network <code>203.0.113.0/24</code> of AS64500 Example &lt;Hosting&gt;."} {
		if !strings.Contains(body, want) {
			t.Errorf("explain: page lacks %q", want)
		}
	}
}
