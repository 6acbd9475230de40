package server

import (
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/gate"
)

func gatePagesFixture(t *testing.T) (*GatePages, *fixture) {
	t.Helper()
	f := newFixture(t, "", "203.0.113.0/24")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	local := engine.NewLocal(f.core, nil, log, f.metrics)
	o, _ := url.Parse("https://admin.example.com")
	g, _, err := gate.New(gate.Options{Origins: []*url.URL{o}, SessionTTL: time.Hour, EnrollTTL: time.Minute, TOTP: true,
		Service: local, Now: func() time.Time { return f.now }, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	trusted, _ := decide.ParseList("127.0.0.0/8")
	p := &GatePages{Gate: g, Service: local, Header: "X-Real-IP", Trusted: NewTrusted(trusted), Now: func() time.Time { return f.now }, Log: log,
		Metrics: NewGateMetrics(f.metrics.Set())}
	if err := p.Init(); err != nil {
		t.Fatal(err)
	}
	return p, f
}

func (p *GatePages) req(method, uri, body string, headers ...string) *fasthttp.Response {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	req.SetBodyString(body)
	if body != "" {
		req.Header.SetContentType("application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, tcp("127.0.0.1"), nil)
	p.Handle(&ctx)
	var resp fasthttp.Response
	ctx.Response.CopyTo(&resp)
	return &resp
}

func TestGatePagesHeaders(t *testing.T) {
	p, _ := gatePagesFixture(t)
	r := p.req("GET", "/_doorman/gate?rd=/admin/", "", "X-Real-IP", "198.51.100.1")
	if r.StatusCode() != 200 {
		t.Fatalf("gate page: %d", r.StatusCode())
	}
	for h, want := range map[string]string{"Content-Security-Policy": "script-src 'self'", "X-Frame-Options": "DENY",
		"Cache-Control": "no-store", "Referrer-Policy": "same-origin"} {
		if got := string(r.Header.Peek(h)); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want it to contain %q", h, got, want)
		}
	}
	body := string(r.Body())
	if strings.Contains(body, "<script>") || strings.Contains(body, "onclick=") {
		t.Errorf("inline script in the page:\n%s", body)
	}
	if !strings.Contains(body, `src="/_doorman/gate.js"`) {
		t.Errorf("the page does not load gate.js")
	}
}

func TestGatePagesRefusals(t *testing.T) {
	p, f := gatePagesFixture(t)
	f.core.Apply(decide.Ban{Key: netip.MustParsePrefix("192.0.2.66/32"), Until: t0.Add(time.Hour), Count: 1}, t0)
	page := p.req("GET", "/_doorman/gate", "", "X-Real-IP", "198.51.100.1")
	var csrf string
	page.Header.VisitAllCookie(func(k, v []byte) {
		var c fasthttp.Cookie
		_ = c.ParseBytes(v)
		if string(c.Key()) == cookieCSRF {
			csrf = string(c.Value())
		}
	})
	if len(csrf) < 16 {
		t.Fatalf("no CSRF cookie set")
	}
	form := "username=alice&code=123456&csrf=" + csrf
	cases := []struct {
		name    string
		uri     string
		body    string
		headers []string
		want    int
	}{
		{"no Origin", "/_doorman/gate/totp", form, []string{"X-Real-IP", "198.51.100.1", "Cookie", cookieCSRF + "=" + csrf}, 403},
		{"foreign Origin", "/_doorman/gate/totp", form, []string{"X-Real-IP", "198.51.100.1", "Origin", "https://evil.example", "Cookie", cookieCSRF + "=" + csrf}, 403},
		{"no CSRF cookie", "/_doorman/gate/totp", form, []string{"X-Real-IP", "198.51.100.1", "Origin", "https://admin.example.com"}, 403},
		{"wrong CSRF token", "/_doorman/gate/totp", "username=alice&code=123456&csrf=xxxxxxxxxxxxxxxxxxxxxxxx", []string{"X-Real-IP", "198.51.100.1", "Origin", "https://admin.example.com", "Cookie", cookieCSRF + "=" + csrf}, 403},
		{"right CSRF, wrong code", "/_doorman/gate/totp", form, []string{"X-Real-IP", "198.51.100.1", "Origin", "https://admin.example.com", "Cookie", cookieCSRF + "=" + csrf}, 401},
		{"banned address", "/_doorman/gate", "", []string{"X-Real-IP", "192.0.2.66"}, 403},
		{"denylisted address", "/_doorman/gate", "", []string{"X-Real-IP", "203.0.113.9"}, 403},
		{"no client address", "/_doorman/gate", "", nil, 403},
		{"rd elsewhere", "/_doorman/gate?rd=https%3A%2F%2Fevil.example%2F", "", []string{"X-Real-IP", "198.51.100.1"}, 400},
		{"rd protocol-relative", "/_doorman/gate?rd=//evil.example/", "", []string{"X-Real-IP", "198.51.100.1"}, 400},
		{"rd a gated origin", "/_doorman/gate?rd=https%3A//admin.example.com/admin/", "", []string{"X-Real-IP", "198.51.100.1"}, 200},
		{"used enrollment link", "/_doorman/enroll?t=nope", "", []string{"X-Real-IP", "198.51.100.1"}, 404},
		{"unknown page", "/_doorman/nope", "", []string{"X-Real-IP", "198.51.100.1"}, 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := "GET"
			if tc.body != "" {
				method = "POST"
			}
			if r := p.req(method, tc.uri, tc.body, tc.headers...); r.StatusCode() != tc.want {
				t.Errorf("%s %s: %d, want %d\n%s", method, tc.uri, r.StatusCode(), tc.want, r.Body())
			}
		})
	}
}

// TestGateEnrollLinkPreview: GETs of the link (a chat app's preview, the
// person opening it twice) leave it working; the page's POST uses it up.
func TestGateEnrollLinkPreview(t *testing.T) {
	p, f := gatePagesFixture(t)
	tok, _, err := p.Gate.Enroll("alice", f.now)
	if err != nil {
		t.Fatal(err)
	}
	link := "/_doorman/enroll?t=" + tok
	ip := []string{"X-Real-IP", "198.51.100.1"}
	for i := range 2 {
		if r := p.req("GET", link, "", ip...); r.StatusCode() != 200 || !strings.Contains(string(r.Body()), `id="enroll-continue"`) {
			t.Fatalf("GET %d of the link: %d\n%s", i, r.StatusCode(), r.Body())
		}
	}
	const csrf = "0123456789abcdefghijkl"
	post := append(ip, "Origin", "https://admin.example.com", "Cookie", cookieCSRF+"="+csrf)
	if r := p.req("POST", "/_doorman/enroll", "t="+tok+"&csrf=nope-nope-nope-nope", post...); r.StatusCode() != 403 {
		t.Errorf("POST with a wrong CSRF token: %d, want 403", r.StatusCode())
	}
	if r := p.req("POST", "/_doorman/enroll", "t="+tok+"&csrf="+csrf, post...); r.StatusCode() != 200 || !strings.Contains(string(r.Body()), `id="passkey-register"`) {
		t.Fatalf("POST of the link: %d\n%s", r.StatusCode(), r.Body())
	}
	for _, m := range []string{"POST", "GET"} {
		body := ""
		if m == "POST" {
			body = "t=" + tok + "&csrf=" + csrf
		}
		uri := map[string]string{"POST": "/_doorman/enroll", "GET": link}[m]
		if r := p.req(m, uri, body, post...); r.StatusCode() != 404 {
			t.Errorf("%s of the used link: %d, want 404", m, r.StatusCode())
		}
	}
}
