package server

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func feedReq(f *fixture, uri string, headers ...string) *fasthttp.Response {
	var req fasthttp.Request
	req.SetRequestURI(uri)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, tcp("127.0.0.1"), nil)
	f.api.Handle(&ctx)
	var resp fasthttp.Response
	ctx.Response.CopyTo(&resp)
	return &resp
}

func TestFeed(t *testing.T) {
	f := newFixture(t, "", "")
	f.api.Feed = NewFeed(f.api.Service)
	for _, p := range []string{"192.0.2.7/32", "198.51.100.0/24", "2001:db8:1::/64"} {
		if _, err := f.api.Service.Ban(context.Background(), netip.MustParsePrefix(p), time.Hour, "secret note", f.now); err != nil {
			t.Fatal(err)
		}
	}
	resp := feedReq(f, "/v1/feed")
	body := string(resp.Body())
	if resp.StatusCode() != 200 || string(resp.Header.Peek("X-Doorman-Feed")) != "bans" {
		t.Fatalf("GET /v1/feed: %d %q", resp.StatusCode(), resp.Header.Peek("X-Doorman-Feed"))
	}
	for _, want := range []string{"\n192.0.2.7/32\n", "\n198.51.100.0/24\n", "\n2001:db8:1::/64\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("body %q lacks %q", body, want)
		}
	}
	if strings.Contains(body, "secret") {
		t.Errorf("the feed shows a note: %q", body)
	}
	etag, lm := string(resp.Header.Peek("ETag")), string(resp.Header.Peek("Last-Modified"))
	if etag == "" || lm != t0.Format(http.TimeFormat) {
		t.Errorf("ETag %q, Last-Modified %q, want a tag and %q", etag, lm, t0.Format(http.TimeFormat))
	}
	f.now = f.now.Add(time.Minute)
	if r := feedReq(f, "/v1/feed", "If-None-Match", etag); r.StatusCode() != 304 {
		t.Errorf("If-None-Match with the same bans: %d, want 304", r.StatusCode())
	}
	if r := feedReq(f, "/v1/feed", "If-Modified-Since", lm); r.StatusCode() != 304 {
		t.Errorf("If-Modified-Since with the same bans: %d, want 304", r.StatusCode())
	}
	if _, err := f.api.Service.Unban(context.Background(), netip.MustParseAddr("192.0.2.7"), f.now); err != nil {
		t.Fatal(err)
	}
	r := feedReq(f, "/v1/feed", "If-None-Match", etag)
	if r.StatusCode() != 200 || strings.Contains(string(r.Body()), "192.0.2.7") {
		t.Errorf("after the unban: %d %q, want 200 without 192.0.2.7", r.StatusCode(), r.Body())
	}
	if got := string(r.Header.Peek("Last-Modified")); got != f.now.Format(http.TimeFormat) {
		t.Errorf("Last-Modified after the change = %q, want %q", got, f.now.Format(http.TimeFormat))
	}
	f.now = f.now.Add(2 * time.Hour) // every ban expired
	r = feedReq(f, "/v1/feed?format=json")
	if r.StatusCode() != 200 || strings.TrimSpace(string(r.Body())) != `{"bans":[]}` {
		t.Errorf("JSON after expiry: %d %q", r.StatusCode(), r.Body())
	}
}
