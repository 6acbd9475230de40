package server

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/internal/nginxcache"
)

func newCachedFixture(t testing.TB, max int) *fixture {
	f := newFixture(t, "", "203.0.113.0/24")
	f.dec.Cache = &Cache{Set: nginxcache.New(max, 10*time.Second+nginxcache.Margin), TTL: 10 * time.Second, Failures: f.core.Failures,
		NAT64: []netip.Prefix{netip.MustParsePrefix("64:ff9b::/96")}}
	return f
}

func TestCachedExpires(t *testing.T) {
	now := t0.Add(300 * time.Millisecond)
	keep := "@" + strconv.FormatInt(t0.Unix()+9, 10)
	cases := []struct {
		name    string
		setup   func(f *fixture)
		peer    string
		headers []string
		want    string
	}{
		{"allowed: kept for the ttl", nil, "127.0.0.1", []string{"X-Real-IP", "192.0.2.1"}, keep},
		{"deny-listed: kept for the ttl", nil, "127.0.0.1", []string{"X-Real-IP", "203.0.113.9"}, keep},
		{"banned: kept until the ban's end", func(f *fixture) {
			f.core.BanPrefix(netip.MustParsePrefix("192.0.2.66/32"), 5*time.Second, "", now)
		}, "127.0.0.1", []string{"X-Real-IP", "192.0.2.66"}, "@" + strconv.FormatInt(t0.Unix()+4, 10)},
		{"banned, ending within the second: not kept", func(f *fixture) {
			f.core.BanPrefix(netip.MustParsePrefix("192.0.2.66/32"), 500*time.Millisecond, "", now)
		}, "127.0.0.1", []string{"X-Real-IP", "192.0.2.66"}, "0"},
		{"failures in the window: not kept", func(f *fixture) {
			f.core.Fail(netip.MustParseAddr("192.0.2.1"), now)
		}, "127.0.0.1", []string{"X-Real-IP", "192.0.2.1"}, "0"},
		{"failures in the window, refresh: replaced by an expired copy", func(f *fixture) {
			f.core.Fail(netip.MustParseAddr("192.0.2.1"), now)
		}, "127.0.0.1", []string{"X-Real-IP", "192.0.2.1", "X-Doorman-Refresh", "192.0.2.1"}, "@1"},
		{"refresh of a verdict that may be kept: kept", nil, "127.0.0.1",
			[]string{"X-Real-IP", "192.0.2.1", "X-Doorman-Refresh", "192.0.2.1"}, keep},
		{"ipv4 of a dual-stack listener", nil, "127.0.0.1", []string{"X-Real-IP", "::ffff:192.0.2.1"}, keep},
		{"ipv6 as nginx writes it", nil, "::1", []string{"X-Real-IP", "::0.1.0.2"}, keep},
		{"ipv6 not as nginx writes it: not kept", nil, "::1", []string{"X-Real-IP", "::1:2"}, "0"},
		{"nat64 client: not kept (nginx keys it by its IPv6 address)", nil, "::1", []string{"X-Real-IP", "64:ff9b::c000:201"}, "0"},
		{"nat64 client on a refresh: replaced by an expired copy", nil, "::1",
			[]string{"X-Real-IP", "64:ff9b::c000:201", "X-Doorman-Refresh", "64:ff9b::c000:201"}, "@1"},
		{"upper case: not kept", nil, "127.0.0.1", []string{"X-Real-IP", "2001:DB8::1"}, "0"},
		{"no client address: not kept", nil, "127.0.0.1", nil, "0"},
		{"no client address on a refresh: not kept", nil, "127.0.0.1", []string{"X-Doorman-Refresh", "192.0.2.1"}, "0"},
		{"untrusted peer: the peer is judged, not kept", nil, "192.0.2.7", []string{"X-Real-IP", "192.0.2.1"}, "0"},
		{"untrusted peer on a refresh: not kept", nil, "192.0.2.7",
			[]string{"X-Real-IP", "192.0.2.1", "X-Doorman-Refresh", "192.0.2.1"}, "0"},
		{"dry run: not kept", func(f *fixture) { f.dec.DryRun = true }, "127.0.0.1", []string{"X-Real-IP", "192.0.2.1"}, "0"},
		{"set full: a new address is not kept", func(f *fixture) {
			for i := range 4 {
				f.dec.Cache.Set.Remember(nginxcache.KeyOf(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})), 0, now.Add(5*time.Second), now, 0)
			}
		}, "127.0.0.1", []string{"X-Real-IP", "192.0.2.1"}, "0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newCachedFixture(t, 4)
			f.now = now
			if tc.setup != nil {
				tc.setup(f)
			}
			resp := f.decideReq(tcp(tc.peer), tc.headers...)
			if got := string(resp.Header.Peek("X-Accel-Expires")); got != tc.want {
				t.Errorf("X-Accel-Expires = %q, want %q (status %d, reason %s)", got, tc.want, resp.StatusCode(), resp.Header.Peek("X-Doorman-Reason"))
			}
		})
	}
}

func TestCachedRemembers(t *testing.T) {
	f := newCachedFixture(t, 100)
	f.now = t0
	f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "192.0.2.1")
	f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "::ffff:192.0.2.1")
	f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "192.0.2.2")
	f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "2001:DB8::1") // not kept, not remembered
	got := keyStrings(f.dec.Cache.Set.In(netip.MustParsePrefix("0.0.0.0/0"), t0, nil))
	got = append(got, keyStrings(f.dec.Cache.Set.In(netip.MustParsePrefix("::/0"), t0, nil))...)
	want := map[string]bool{"192.0.2.1": true, "::ffff:192.0.2.1": true, "192.0.2.2": true}
	if len(got) != len(want) {
		t.Fatalf("remembered %v, want %v", got, want)
	}
	for _, k := range got {
		if !want[k] {
			t.Errorf("remembered %s, want only %v", k, want)
		}
	}
	// A decision made before a change, remembered after it: not kept.
	var req fasthttp.Request
	req.SetRequestURI("/decide")
	req.Header.Set("X-Real-IP", "192.0.2.3")
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, tcp("127.0.0.1"), nil)
	mark := f.dec.Cache.mark()
	f.dec.Cache.Set.Change()
	f.dec.Cache.expires(&ctx, false, netip.MustParseAddr("192.0.2.3"), []byte("192.0.2.3"), f.core.Decide(netip.MustParseAddr("192.0.2.3"), t0), t0, mark)
	if got := string(ctx.Response.Header.Peek("X-Accel-Expires")); got != "0" {
		t.Errorf("decision before a change: X-Accel-Expires %q, want \"0\"", got)
	}
}

func keyStrings(ks []nginxcache.Key) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.String()
	}
	return out
}

func TestPlainModeSendsNoExpiry(t *testing.T) {
	f := newFixture(t, "", "")
	if got := f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "192.0.2.1").Header.Peek("X-Accel-Expires"); got != nil {
		t.Errorf("plain mode: X-Accel-Expires %q, want none", got)
	}
}

func TestCachedDoesNotAllocate(t *testing.T) {
	f := newCachedFixture(t, 1000)
	f.core.BanPrefix(netip.MustParsePrefix("192.0.2.66/32"), time.Hour, "", t0)
	f.core.Fail(netip.MustParseAddr("192.0.2.77"), t0)
	for _, ip := range []string{"192.0.2.1", "203.0.113.1", "192.0.2.66", "192.0.2.77", "2001:db8::1", "2001:DB8::1"} {
		var req fasthttp.Request
		req.SetRequestURI("/decide")
		req.Header.Set("X-Real-IP", ip)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, tcp("127.0.0.1"), nil)
		f.dec.Handle(&ctx) // warm up header buffers
		n := testing.AllocsPerRun(1000, func() {
			f.now = f.now.Add(time.Millisecond)
			ctx.Response.Reset()
			f.dec.Handle(&ctx)
		})
		if n != 0 {
			t.Errorf("%s: %v allocs per decision in cached mode, want 0", ip, n)
		}
	}
}

// BenchmarkHandleCached is the allow path of /decide in cached mode: the
// verdict, then its key checked and remembered, for 64k addresses in turn.
func BenchmarkHandleCached(b *testing.B) {
	for _, cached := range []bool{false, true} {
		f := newFixture(b, "", "203.0.113.0/24")
		if cached {
			f.dec.Cache = &Cache{Set: nginxcache.New(1<<20, 11*time.Second), TTL: 10 * time.Second, Failures: f.core.Failures}
		}
		ctxs := make([]fasthttp.RequestCtx, 1<<16)
		for i := range ctxs {
			var req fasthttp.Request
			req.SetRequestURI("/decide")
			req.Header.Set("X-Real-IP", netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String())
			ctxs[i].Init(&req, tcp("127.0.0.1"), nil)
			f.dec.Handle(&ctxs[i]) // warm up header buffers, remember the key
		}
		b.Run(map[bool]string{false: "plain", true: "cached"}[cached], func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i = (i + 1) & (1<<16 - 1)
				f.now = f.now.Add(time.Microsecond)
				ctxs[i].Response.Reset()
				f.dec.Handle(&ctxs[i])
			}
		})
	}
}

// The API says "proxies_refreshed" when a change was refreshed in nginx, and
// false when a refresh failed.
func TestAPIProxiesRefreshed(t *testing.T) {
	for _, works := range []bool{true, false} {
		t.Run(map[bool]string{true: "refreshed", false: "refresh failed"}[works], func(t *testing.T) {
			nginx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !works {
					w.WriteHeader(http.StatusForbidden) // nginx's deny: no X-Doorman-Verdict
					return
				}
				w.Header().Set("X-Doorman-Verdict", "deny")
				w.WriteHeader(http.StatusForbidden)
			}))
			defer nginx.Close()
			f := newCachedFixture(t, 100)
			ms := metrics.NewSet()
			r := nginxcache.NewRefresher(nginxcache.RefresherOptions{URLs: []string{nginx.URL}, Set: f.dec.Cache.Set, TTL: 10 * time.Second,
				Verdict: f.core.Decide, Metrics: ms, Log: f.api.Log, Now: func() time.Time { return f.now.Add(-time.Hour) }})
			f.api.Service.AddHook(r)
			f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "192.0.2.1") // kept: remembered
			want := works
			var body map[string]any
			for range 3 {
				_, body = f.apiReq("POST", "/v1/failures", `{"ip":"192.0.2.1"}`)
			}
			if body["banned"] != true || body["proxies_refreshed"] != want {
				t.Errorf("banning failure: %v, want banned and proxies_refreshed %v", body, want)
			}
			f.decideReq(tcp("127.0.0.1"), "X-Real-IP", "192.0.2.9")
			if status, body := f.apiReq("POST", "/v1/bans", `{"ip":"192.0.2.0/24"}`); status != 201 || body["proxies_refreshed"] != want {
				t.Errorf("range ban: %d %v, want 201 and proxies_refreshed %v", status, body, want)
			}
			status, body := f.apiReq("DELETE", "/v1/bans/192.0.2.0/24", "")
			if works && status != 204 || !works && (status != 200 || body["proxies_refreshed"] != false) {
				t.Errorf("unban: %d %v, want 204, or 200 with proxies_refreshed false", status, body)
			}
			if _, body := f.apiReq("POST", "/v1/failures", `{"ip":"198.51.100.1"}`); body["proxies_refreshed"] != nil {
				t.Errorf("failure without a ban: %v, want no proxies_refreshed", body)
			}
			if got := ms.GetOrCreateCounter("doorman_cache_refresh_errors_total").Get(); works != (got == 0) {
				t.Errorf("doorman_cache_refresh_errors_total = %d", got)
			}
		})
	}
}
