package server

import (
	"bytes"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
)

// gateFixture: allowlist 192.0.2.0/24 (when allow), deny 203.0.113.0/24,
// 192.0.2.66 banned; a session of alice.
func gateFixture(t testing.TB, allow string, bypass bool) (*fixture, string) {
	t.Helper()
	f := newFixture(t, allow, "203.0.113.0/24")
	f.core.Apply(decide.Ban{Key: netip.MustParsePrefix("192.0.2.66/32"), Until: t0.Add(time.Hour), Count: 1}, t0)
	g := new(decide.Gate)
	if err := g.SetKey(bytes.Repeat([]byte{1}, decide.GateKeyMin)); err != nil {
		t.Fatal(err)
	}
	id := decide.GateCredID{5}
	g.SetCredentials(map[decide.GateCredID]decide.GateEntry{id: {User: "alice", UserHeader: []byte("alice")}})
	o, _ := url.Parse("https://admin.example.com")
	f.dec.Gate = &GateCheck{Sessions: g, BypassAllow: bypass, Origins: GateOrigins([]*url.URL{o}), Metrics: NewGateMetrics(f.metrics.Set())}
	return f, g.Issue(id, 0, t0.Add(time.Hour))
}

func (f *fixture) gateReq(uri string, peer net.Addr, headers ...string) *fasthttp.Response {
	var req fasthttp.Request
	req.SetRequestURI(uri)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, peer, nil)
	f.dec.Handle(&ctx)
	var resp fasthttp.Response
	ctx.Response.CopyTo(&resp)
	return &resp
}

func TestGateDecision(t *testing.T) {
	cases := []struct {
		name       string
		allow      string
		bypass     bool
		ip         string
		session    bool
		wantStatus int
		wantReason string
	}{
		{"session", "", false, "198.51.100.1", true, 204, "gate"},
		{"no session", "", false, "198.51.100.1", false, 401, "gate-required"},
		{"denylisted with session", "", true, "203.0.113.5", true, 403, "denylisted"},
		{"banned with session", "", false, "192.0.2.66", true, 204, "gate"},
		{"banned without", "", false, "192.0.2.66", false, 403, "banned"},
		{"outside allowlist with session", "192.0.2.0/24", false, "198.51.100.1", true, 403, "not-allowlisted"},
		{"outside allowlist with session, bypass", "192.0.2.0/24", true, "198.51.100.1", true, 204, "gate"},
		{"outside allowlist without session, bypass", "192.0.2.0/24", true, "198.51.100.1", false, 403, "not-allowlisted"},
		{"inside allowlist without session", "192.0.2.0/24", false, "192.0.2.1", false, 401, "gate-required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, tok := gateFixture(t, tc.allow, tc.bypass)
			if !tc.session {
				tok = "x"
			}
			r := f.gateReq("/gate", tcp("127.0.0.1"), "X-Real-IP", tc.ip, "X-Doorman-Gate", tok)
			if r.StatusCode() != tc.wantStatus || string(r.Header.Peek("X-Doorman-Reason")) != tc.wantReason {
				t.Errorf("/gate: %d %s, want %d %s", r.StatusCode(), r.Header.Peek("X-Doorman-Reason"), tc.wantStatus, tc.wantReason)
			}
			if got := string(r.Header.Peek("X-Accel-Expires")); got != "0" {
				t.Errorf("X-Accel-Expires %q, want 0", got)
			}
			if want := map[bool]string{true: "alice"}[tc.wantStatus == 204]; string(r.Header.Peek("X-Doorman-User")) != want {
				t.Errorf("X-Doorman-User %q, want %q", r.Header.Peek("X-Doorman-User"), want)
			}
			// The same through forward auth, the session in the cookie.
			fwant := map[int]int{204: 200, 401: 302, 403: 403}[tc.wantStatus]
			r = f.gateReq("/forward-auth/gate", tcp("127.0.0.1"), "X-Forwarded-For", tc.ip, "Cookie", "a=b; doorman_gate="+tok,
				"X-Forwarded-Proto", "https", "X-Forwarded-Host", "admin.example.com", "X-Forwarded-Uri", "/admin/?q=1")
			if r.StatusCode() != fwant {
				t.Errorf("/forward-auth/gate: %d, want %d", r.StatusCode(), fwant)
			}
			if fwant == 302 {
				want := "https://admin.example.com/_doorman/gate?rd=https%3A//admin.example.com/admin/%3Fq%3D1"
				if got := string(r.Header.Peek("Location")); got != want {
					t.Errorf("Location %q, want %q", got, want)
				}
			}
		})
	}
}

func TestGateNoOpenRedirect(t *testing.T) {
	f, _ := gateFixture(t, "", false)
	for _, host := range []string{"evil.example", "admin.example.com.evil.example", ""} {
		r := f.gateReq("/forward-auth/gate", tcp("127.0.0.1"), "X-Forwarded-For", "198.51.100.1",
			"X-Forwarded-Proto", "https", "X-Forwarded-Host", host, "X-Forwarded-Uri", "/x")
		loc := string(r.Header.Peek("Location"))
		if r.StatusCode() != 302 || loc != "https://admin.example.com/_doorman/gate" {
			t.Errorf("host %q: %d Location %q, want 302 to the first origin's gate without rd", host, r.StatusCode(), loc)
		}
	}
	r := f.gateReq("/forward-auth/gate", tcp("127.0.0.1"), "X-Forwarded-For", "198.51.100.1",
		"X-Forwarded-Proto", "http", "X-Forwarded-Host", "admin.example.com", "X-Forwarded-Uri", "/x")
	if loc := string(r.Header.Peek("Location")); strings.Contains(loc, "rd=") {
		t.Errorf("plain http origin kept in rd: %q", loc)
	}
}

func TestGatePaths(t *testing.T) {
	for _, tc := range []struct {
		uri        string
		gate, fwdg bool
	}{
		{"/gate", true, false}, {"/gate?x=1", true, false}, {"/gatex", false, false},
		{"/forward-auth/gate", false, true}, {"/forward-auth/gate?a", false, true}, {"/forward-auth/gatex", false, false},
	} {
		if g, fg := gatePath([]byte(tc.uri), pathGate), gatePath([]byte(tc.uri), pathForwardGate); g != tc.gate || fg != tc.fwdg {
			t.Errorf("%s: gate %v forward-gate %v, want %v %v", tc.uri, g, fg, tc.gate, tc.fwdg)
		}
	}
}

func TestGateAllocs(t *testing.T) {
	f, tok := gateFixture(t, "", false)
	for _, tc := range []struct{ name, uri, hdr, val, session string }{
		{"gate-session", "/gate", "X-Real-IP", "198.51.100.1", "X-Doorman-Gate"},
		{"gate-required", "/gate", "X-Real-IP", "198.51.100.1", "X-Nothing"},
		{"forward-session", "/forward-auth/gate", "X-Forwarded-For", "198.51.100.1", "Cookie"},
		{"forward-302", "/forward-auth/gate", "X-Forwarded-For", "198.51.100.1", "X-Nothing"},
	} {
		var req fasthttp.Request
		req.SetRequestURI(tc.uri)
		req.Header.Set(tc.hdr, tc.val)
		v := tok
		if tc.session == "Cookie" {
			v = "doorman_gate=" + tok
		}
		req.Header.Set(tc.session, v)
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "admin.example.com")
		req.Header.Set("X-Forwarded-Uri", "/admin/")
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, tcp("127.0.0.1"), nil)
		run := func() { ctx.Response.Reset(); f.dec.Handle(&ctx) }
		run()
		if n := testing.AllocsPerRun(1000, run); n != 0 {
			t.Errorf("%s allocates %v times, want 0", tc.name, n)
		}
	}
}

func BenchmarkGateHandle(b *testing.B) {
	f, tok := gateFixture(b, "", false)
	for _, tc := range []struct{ name, uri, session string }{{"decide", "/decide", ""}, {"gate-session", "/gate", tok}, {"gate-required", "/gate", ""}} {
		b.Run(tc.name, func(b *testing.B) {
			var req fasthttp.Request
			req.SetRequestURI(tc.uri)
			req.Header.Set("X-Real-IP", "198.51.100.1")
			if tc.session != "" {
				req.Header.Set("X-Doorman-Gate", tc.session)
			}
			var ctx fasthttp.RequestCtx
			ctx.Init(&req, tcp("127.0.0.1"), nil)
			b.ReportAllocs()
			for b.Loop() {
				ctx.Response.Reset()
				f.dec.Handle(&ctx)
			}
		})
	}
}
