package server

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzClientHeader sends arbitrary client-address header values from a
// trusted peer. As X-Real-IP to /decide: the answer is 204 or 403 with an
// empty body, and 204 only for a value that is exactly one address outside the
// deny list. As X-Forwarded-For to /forward-auth and /ext-authz/: the answer
// is 200 or 403 with an empty body, and the verdict is that of a slow,
// obvious walk of the list (the rightmost element that is not a trusted
// proxy, every element up to it a bare address); from an untrusted peer the
// header changes nothing.
func FuzzClientHeader(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "203.0.113.9", "::ffff:203.0.113.9", "2001:db8::1%eth0", "203.0.113.9, 192.0.2.1",
		" 192.0.2.1", "192.0.2.1:80", "", "\xff\xfe", "[::1]", "0x7f.1",
		"192.0.2.1, 127.0.0.1", "203.0.113.9,127.0.0.1,::1", "127.0.0.1", ", 192.0.2.1", "192.0.2.1,", "junk, 192.0.2.1\t, 127.0.0.9"} {
		f.Add(s)
	}
	fx := newFixture(f, "", "203.0.113.0/24,0.0.0.0/8")
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	f.Fuzz(func(t *testing.T, v string) {
		var req fasthttp.Request
		req.SetRequestURI("/decide")
		req.Header.Set("X-Real-IP", v)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, tcp("127.0.0.1"), nil)
		fx.dec.Handle(&ctx)
		status := ctx.Response.StatusCode()
		if (status != 204 && status != 403) || len(ctx.Response.Body()) != 0 {
			t.Fatalf("%q: status %d body %q", v, status, ctx.Response.Body())
		}
		if status == 204 {
			// fasthttp trims the value; what was allowed must parse and be outside the deny list.
			got := string(req.Header.Peek("X-Real-IP"))
			a, err := netip.ParseAddr(got)
			if err != nil {
				t.Fatalf("%q allowed but does not parse: %v", got, err)
			}
			if fx.core.Lists().Denied(a.Unmap()) {
				t.Fatalf("%q allowed but denylisted", got)
			}
		}

		for _, uri := range []string{"/forward-auth", "/ext-authz/admin/"} {
			for _, peer := range []string{"127.0.0.1", "192.0.2.77", "203.0.113.77"} {
				var req fasthttp.Request
				req.SetRequestURI(uri)
				req.Header.Set("X-Forwarded-For", v)
				var ctx fasthttp.RequestCtx
				ctx.Init(&req, tcp(peer), nil)
				fx.dec.Handle(&ctx)
				status := ctx.Response.StatusCode()
				if (status != 200 && status != 403) || len(ctx.Response.Body()) != 0 {
					t.Fatalf("%s %q from %s: status %d body %q", uri, v, peer, status, ctx.Response.Body())
				}
				// The value as stored (fasthttp trims it), judged the slow way.
				client, ok := netip.MustParseAddr(peer), true
				if peer == "127.0.0.1" {
					client, ok = slowForwardedFor(string(req.Header.Peek("X-Forwarded-For")), trusted)
				}
				want := 403
				if ok && !fx.core.Lists().Denied(client) {
					want = 200
				}
				if status != want {
					t.Fatalf("%s %q from %s: status %d, want %d (client %v, found %v)", uri, v, peer, status, want, client, ok)
				}
			}
		}
	})
}

// slowForwardedFor is the X-Forwarded-For rule written the obvious way.
func slowForwardedFor(v string, trusted []netip.Prefix) (netip.Addr, bool) {
	elems := strings.Split(v, ",")
	for i := len(elems) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.Trim(elems[i], " \t"))
		if err != nil {
			return netip.Addr{}, false
		}
		a = a.Unmap().WithZone("")
		isTrusted := false
		for _, p := range trusted {
			if p.Contains(a) {
				isTrusted = true
			}
		}
		if !isTrusted {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// FuzzWebhook posts arbitrary bodies to every JSON endpoint: the answer is
// 2xx or 4xx with a JSON body, never 5xx, never a panic.
func FuzzWebhook(f *testing.F) {
	for _, s := range []string{`{"ip":"203.0.113.7","username":"admin"}`, `{"ip":"2001:db8::1"}`, `{"ip":12}`, `{"ip":"10.0.0.0/8","duration":"1h"}`,
		`{"ip":"1.2.3.4","duration":"-5s"}`, `{"ip":"1.2.3.4"}{}`, `[]`, `null`, ``, `{"ip":"\u0000"}`} {
		f.Add(s)
	}
	fx := newFixture(f, "", "")
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/v1/failures", "/v1/successes", "/v1/bans"} {
			status, out := fx.apiReqRaw("POST", path, body)
			if status >= 500 || status < 200 {
				t.Fatalf("%s %q: status %d", path, body, status)
			}
			if !json.Valid(out) {
				t.Fatalf("%s %q: not JSON: %q", path, body, out)
			}
		}
	})
}

func (f *fixture) apiReqRaw(method, uri, body string) (int, []byte) {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	req.SetBodyString(body)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, tcp("127.0.0.1"), nil)
	f.api.Handle(&ctx)
	return ctx.Response.StatusCode(), append([]byte(nil), ctx.Response.Body()...)
}
