package ui

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

var t0 = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

type fixture struct {
	ui    *UI
	local *engine.Local
	now   time.Time
	dec   [decide.NumReasons]uint64
	fails uint64
}

func newFixture(t *testing.T, token string) *fixture {
	t.Helper()
	f := &fixture{now: t0}
	p := decide.Policy{MaxFailures: 3, FindTime: 10 * time.Minute, BanTime: time.Hour, BanFactor: 2,
		MaxBanTime: 168 * time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}
	core := decide.New(p, nil, 1000, 1000)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	clock := func() time.Time { return f.now }
	f.local = engine.NewLocal(core, nil, log, engine.NewMetrics(core.Stats, false, clock))
	u, err := New(Options{Service: f.local, History: f.local.NewHistory(100), Token: token, Version: "test",
		Counts: func() ([decide.NumReasons]uint64, uint64) { return f.dec, f.fails }, Log: log, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	f.ui = u
	return f
}

type resp struct {
	status int
	body   string
	header *fasthttp.ResponseHeader
}

// req runs one request from peer 127.0.0.1 with Host 127.0.0.1:9181 unless
// headers say otherwise. form is an urlencoded body for POST.
func (f *fixture) req(method, uri, cookie, form string, headers ...string) resp {
	var r fasthttp.Request
	r.Header.SetMethod(method)
	r.SetRequestURI(uri)
	r.Header.SetHost("127.0.0.1:9181")
	if cookie != "" {
		r.Header.SetCookie(cookieName, cookie)
	}
	if form != "" {
		r.Header.SetContentType("application/x-www-form-urlencoded")
		r.SetBodyString(form)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&r, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	f.ui.Handle(&ctx)
	h := &fasthttp.ResponseHeader{}
	ctx.Response.Header.CopyTo(h)
	return resp{ctx.Response.StatusCode(), string(ctx.Response.Body()), h}
}

func cookieOf(t *testing.T, r resp) (value string, c *fasthttp.Cookie) {
	t.Helper()
	c = &fasthttp.Cookie{}
	c.SetKey(cookieName)
	if !r.header.Cookie(c) {
		t.Fatalf("no %s cookie set; status %d", cookieName, r.status)
	}
	return string(c.Value()), c
}

// login signs in and returns the cookie value and the CSRF token.
func (f *fixture) login(t *testing.T) (string, string) {
	t.Helper()
	r := f.req("POST", "/ui/login", "", "token=s3cret")
	if r.status != 303 || string(r.header.Peek("Location")) != "/ui/" {
		t.Fatalf("login: %d, Location %q", r.status, r.header.Peek("Location"))
	}
	cookie, _ := cookieOf(t, r)
	page := f.req("GET", "/ui/", cookie, "")
	return cookie, csrfOf(t, page.body)
}

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	_, rest, ok := strings.Cut(body, `name="csrf" value="`)
	if !ok {
		t.Fatalf("no csrf field in the page:\n%.300s", body)
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

func (f *fixture) banned(t *testing.T, ip string) bool {
	t.Helper()
	return f.local.Decide(netip.MustParseAddr(ip), f.now).Reason == decide.Banned
}

func TestLogin(t *testing.T) {
	f := newFixture(t, "s3cret")

	// No session: the login form, not the page; the bearer token does not
	// open it either.
	for _, hdr := range [][]string{nil, {"Authorization", "Bearer s3cret"}} {
		r := f.req("GET", "/ui/", "", "", hdr...)
		if r.status != 200 || !strings.Contains(r.body, `action="/ui/login"`) || strings.Contains(r.body, "Decisions per minute") {
			t.Errorf("GET /ui/ %v without a session: %d %.200q, want the login form", hdr, r.status, r.body)
		}
	}
	if r := f.req("POST", "/ui/login", "", "token=wrong"); r.status != 401 || !strings.Contains(r.body, "Wrong token") {
		t.Errorf("wrong token: %d, want 401 with the form", r.status)
	}

	r := f.req("POST", "/ui/login", "", "token=s3cret")
	cookie, c := cookieOf(t, r)
	if r.status != 303 || !c.HTTPOnly() || c.SameSite() != fasthttp.CookieSameSiteStrictMode || string(c.Path()) != "/ui/" ||
		c.Secure() || c.MaxAge() != int(SessionTTL/time.Second) {
		t.Errorf("login cookie %q: HttpOnly %v SameSite %v Path %q Secure %v MaxAge %d", c.String(), c.HTTPOnly(), c.SameSite(), c.Path(), c.Secure(), c.MaxAge())
	}
	if strings.Contains(cookie, "s3cret") {
		t.Errorf("cookie %q holds the token", cookie)
	}
	if _, c := cookieOf(t, f.req("POST", "/ui/login", "", "token=s3cret", "X-Forwarded-Proto", "https")); !c.Secure() {
		t.Errorf("login behind a TLS proxy: cookie not Secure")
	}
	if page := f.req("GET", "/ui/", cookie, ""); page.status != 200 || !strings.Contains(page.body, "Decisions per minute") {
		t.Fatalf("with the session: %d %.200q", page.status, page.body)
	}

	// A forged or altered cookie is no session. (The first character is
	// replaced by one it is not: "a" unless it is "a" already.)
	first := map[bool]string{false: "a", true: "b"}[cookie[0] == 'a']
	for _, bad := range []string{"x", cookie + "x", first + cookie[1:], strings.Split(cookie, ".")[0] + ".", "." + strings.Split(cookie, ".")[1]} {
		if r := f.req("GET", "/ui/", bad, ""); strings.Contains(r.body, "Decisions per minute") {
			t.Errorf("cookie %q opened the page", bad)
		}
	}

	// 12 hours later the session is over.
	f.now = f.now.Add(SessionTTL)
	if r := f.req("GET", "/ui/", cookie, ""); strings.Contains(r.body, "Decisions per minute") {
		t.Errorf("session still open after %v", SessionTTL)
	}
}

func TestLogout(t *testing.T) {
	f := newFixture(t, "s3cret")
	cookie, csrf := f.login(t)
	if r := f.req("POST", "/ui/logout", cookie, ""); r.status != 403 {
		t.Errorf("logout without csrf: %d, want 403", r.status)
	}
	r := f.req("POST", "/ui/logout", cookie, "csrf="+csrf)
	if r.status != 303 {
		t.Fatalf("logout: %d", r.status)
	}
	if _, c := cookieOf(t, r); c.MaxAge() >= 0 && !c.Expire().Before(t0) {
		t.Errorf("logout does not clear the cookie: %s", c.String())
	}
	if r := f.req("GET", "/ui/", cookie, ""); strings.Contains(r.body, "Decisions per minute") {
		t.Errorf("session still open after logout")
	}
}

func TestLoginRateLimit(t *testing.T) {
	f := newFixture(t, "s3cret")
	for i := range LoginPerAddr {
		if r := f.req("POST", "/ui/login", "", "token=guess"); r.status != 401 {
			t.Fatalf("wrong token %d: %d, want 401", i+1, r.status)
		}
	}
	for _, tok := range []string{"guess", "s3cret"} { // even the right one: a guesser learns nothing
		r := f.req("POST", "/ui/login", "", "token="+tok)
		if r.status != 429 || r.header.Peek("Retry-After") == nil || r.header.Peek("Set-Cookie") != nil {
			t.Errorf("token %s past the limit: %d, Retry-After %q, want 429 and no session", tok, r.status, r.header.Peek("Retry-After"))
		}
	}
	f.now = f.now.Add(LoginWindow)
	if r := f.req("POST", "/ui/login", "", "token=s3cret"); r.status != 303 {
		t.Errorf("after the window: %d, want 303", r.status)
	}
}

func TestSessionsBounded(t *testing.T) {
	s := newSessions()
	first := s.create(t0)
	for i := range MaxSessions + 5 {
		s.create(t0.Add(time.Duration(i+1) * time.Second))
	}
	if s.len() > MaxSessions {
		t.Errorf("%d sessions held, want at most %d", s.len(), MaxSessions)
	}
	if _, _, ok := s.lookup(first, t0.Add(time.Hour)); ok {
		t.Errorf("the session expiring first survived")
	}
	other := newSessions() // another process: another key
	c := s.create(t0)
	if _, _, ok := other.lookup(c, t0); ok {
		t.Errorf("a cookie of another key was accepted")
	}
}

// State-changing forms need the session's CSRF token: without it, or with
// another session's, 403 and nothing changes.
func TestCSRF(t *testing.T) {
	f := newFixture(t, "s3cret")
	cookie, csrf := f.login(t)
	_, otherCSRF := f.login(t)
	if csrf == otherCSRF || csrf == "" {
		t.Fatalf("CSRF tokens %q and %q, want distinct", csrf, otherCSRF)
	}
	for _, tc := range []struct {
		name, cookie, form string
	}{
		{"no csrf", cookie, "ip=192.0.2.9&duration=1h"},
		{"empty csrf", cookie, "ip=192.0.2.9&duration=1h&csrf="},
		{"other session's csrf", cookie, "ip=192.0.2.9&duration=1h&csrf=" + otherCSRF},
		{"no session", "", "ip=192.0.2.9&duration=1h&csrf=" + csrf},
		{"csrf in the query", cookie, ""},
	} {
		uri := "/ui/ban"
		if tc.form == "" {
			uri += "?ip=192.0.2.9&csrf=" + csrf
		}
		if r := f.req("POST", uri, tc.cookie, tc.form); r.status != 403 {
			t.Errorf("%s: %d, want 403", tc.name, r.status)
		}
		if f.banned(t, "192.0.2.9") {
			t.Fatalf("%s: the ban was made", tc.name)
		}
	}
	if r := f.req("POST", "/ui/ban", cookie, "ip=192.0.2.9&duration=1h&note=x&csrf="+csrf); r.status != 303 {
		t.Fatalf("ban with csrf: %d %s", r.status, r.body)
	}
	if !f.banned(t, "192.0.2.9") {
		t.Fatal("ban with csrf not in force")
	}
	if r := f.req("POST", "/ui/unban", cookie, "ip=192.0.2.9"); r.status != 403 || !f.banned(t, "192.0.2.9") {
		t.Errorf("unban without csrf: %d, banned %v; want 403 and still banned", r.status, f.banned(t, "192.0.2.9"))
	}
	if r := f.req("GET", "/ui/unban?ip=192.0.2.9&csrf="+csrf, cookie, ""); r.status != 405 || !f.banned(t, "192.0.2.9") {
		t.Errorf("unban by GET: %d, want 405 and still banned", r.status)
	}
}

func TestActions(t *testing.T) {
	f := newFixture(t, "s3cret")
	cookie, csrf := f.login(t)
	flash := func() string {
		t.Helper()
		body := f.req("GET", "/ui/", cookie, "").body
		_, rest, ok := strings.Cut(body, `class="flash" role="status">`)
		if !ok {
			return ""
		}
		msg, _, _ := strings.Cut(rest, "</p>")
		return msg
	}
	for _, tc := range []struct {
		path, form, flash string
	}{
		{"/ui/ban", "ip=192.0.2.9&duration=90m&note=scanner", "Banned 192.0.2.9/32 until 2026-11-28 11:30 UTC (in 1 hour and 30 minutes)."},
		{"/ui/ban", "ip=198.51.100.0/24", "Banned 198.51.100.0/24 until 2026-11-28 11:00 UTC (in 1 hour)."},
		{"/ui/ban", "ip=192.0.2.10&duration=1ns", "Not banned: &#34;1ns&#34; is not a duration from 1s to 87600h (e.g. 90s, 1h)."},
		{"/ui/ban", "ip=nonsense", "Not banned:"},
		{"/ui/unban", "ip=192.0.2.9", "Unbanned 192.0.2.9/32."},
		{"/ui/unban", "ip=192.0.2.9", "No ban covers 192.0.2.9."},
		{"/ui/unban", "ip=198.51.100.0/24", "Unbanned 198.51.100.0/24."},
		{"/ui/unban", "ip=<script>", "Not unbanned: &#34;&lt;script&gt;&#34; is not an IP address or a ban&#39;s CIDR."},
	} {
		if r := f.req("POST", tc.path, cookie, tc.form+"&csrf="+csrf); r.status != 303 {
			t.Fatalf("%s %s: %d", tc.path, tc.form, r.status)
		}
		if got := flash(); !strings.HasPrefix(got, tc.flash) {
			t.Errorf("%s %s: says %q, want %q", tc.path, tc.form, got, tc.flash)
		}
	}
	if got := flash(); got != "" {
		t.Errorf("the message shows twice: %q", got)
	}
	// The history saw the changes made from the page.
	page := f.req("GET", "/ui/", cookie, "").body
	for _, want := range []string{"range_unban", "range_ban", "<td>unban</td>"} {
		if !strings.Contains(page, want) {
			t.Errorf("recent events lack %q", want)
		}
	}
}

func TestPage(t *testing.T) {
	f := newFixture(t, "")
	ctx := context.Background()
	for _, p := range []string{"192.0.2.1/32", "192.0.2.2/32", "192.0.2.3/32", "2001:db8::/64", "10.0.0.0/8"} {
		if _, err := f.local.Ban(ctx, netip.MustParsePrefix(p), time.Hour, "note-"+p, f.now); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		f.local.Fail(ctx, netip.MustParseAddr("203.0.113.5"), "", f.now)
	}
	// The chart: decisions sampled in two minutes.
	f.dec[decide.Allowed], f.dec[decide.Banned], f.fails = 40, 10, 3
	f.ui.sample.sample(f.now.Add(-time.Minute))
	f.dec[decide.Allowed] += 20
	f.ui.sample.sample(f.now)

	// Without a token: the page opens directly, with a session for CSRF.
	r := f.req("GET", "/ui/", "", "")
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	cookieOf(t, r)
	for _, want := range []string{
		"<b>6</b> bans in force", // five manual, one from failures
		"<code>10.0.0.0/8</code>", "note-2001:db8::/64",
		`<a href="/ui/?q=192.0.2.0%2f24#bans"><code>192.0.2.0/24</code></a></td><td>3</td>`, // top ranges
		"allowed 60", "banned 10", "failures 3", "50/min", `fill="#009E73"`, "<svg",
		"6 in force.",
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(r.body, "Sign out") {
		t.Errorf("a sign-out button without a login")
	}

	for _, tc := range []struct {
		q      string
		want   []string
		absent []string
	}{
		{"192.0.2.2", []string{"1 matching", `name="ip" value="192.0.2.2/32"`}, []string{`name="ip" value="192.0.2.1/32"`}},
		{"192.0.2.0/24", []string{"3 matching"}, []string{`name="ip" value="10.0.0.0/8"`}},
		{"10.1.2.3", []string{"1 matching", `name="ip" value="10.0.0.0/8"`}, nil},
		{"note-2001", []string{"1 matching"}, nil},
		{"<b>x", []string{"0 matching", `value="&lt;b&gt;x"`}, []string{"<b>x"}},
	} {
		body := f.req("GET", "/ui/?q="+urlEscape(tc.q), "", "").body
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("filter %q: page lacks %q", tc.q, w)
			}
		}
		for _, a := range tc.absent {
			if strings.Contains(body, a) {
				t.Errorf("filter %q: page holds %q", tc.q, a)
			}
		}
	}

	for _, tc := range []struct{ ip, want string }{
		{"192.0.2.1", "<code>192.0.2.1</code> is <b>denied</b> (banned): banned as <code>192.0.2.1/32</code> until 2026-11-28 11:00:00 UTC, in 1 hour. 0 failures"},
		{"203.0.113.5", "<code>203.0.113.5</code> is <b>denied</b> (banned)"},
		{"198.51.100.1", "<code>198.51.100.1</code> is <b>allowed</b> (allowed). 0 failures"},
		{"::ffff:192.0.2.1", "<code>192.0.2.1</code> is <b>denied</b>"},
		{"bogus", "bogus: not an IP address"},
	} {
		if body := f.req("GET", "/ui/?ip="+urlEscape(tc.ip), "", "").body; !strings.Contains(body, tc.want) {
			t.Errorf("explain %s: page lacks %q", tc.ip, tc.want)
		}
	}
}

func urlEscape(s string) string {
	var a fasthttp.Args
	a.Set("x", s)
	return strings.TrimPrefix(a.String(), "x=")
}

func TestNoTokenNeedsLocalHost(t *testing.T) {
	f := newFixture(t, "")
	for _, tc := range []struct {
		host string
		code int
	}{
		{"127.0.0.1:9181", 200}, {"localhost:9181", 200}, {"[::1]:9181", 200}, {"LOCALHOST", 200},
		{"evil.example:9181", 403}, {"127.0.0.1.nip.io", 403}, {"", 403},
	} {
		if r := f.req("GET", "/ui/", "", "", "Host", tc.host); r.status != tc.code {
			t.Errorf("Host %q: %d, want %d", tc.host, r.status, tc.code)
		}
	}
	// With a token the login protects the page; any Host may reach the form.
	g := newFixture(t, "s3cret")
	if r := g.req("GET", "/ui/", "", "", "Host", "doorman.example"); r.status != 200 {
		t.Errorf("token set, Host doorman.example: %d", r.status)
	}
}

func TestHeadersAndRoutes(t *testing.T) {
	f := newFixture(t, "s3cret")
	for _, tc := range []struct {
		method, uri string
		code        int
	}{
		{"GET", "/ui", 303}, {"GET", "/ui/style.css", 200}, {"GET", "/ui/nope", 404},
		{"GET", "/ui/login", 405}, {"DELETE", "/ui/", 405}, {"POST", "/ui/", 405},
	} {
		r := f.req(tc.method, tc.uri, "", "")
		if r.status != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.uri, r.status, tc.code)
		}
		for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "Cache-Control"} {
			if r.header.Peek(h) == nil {
				t.Errorf("%s %s: no %s", tc.method, tc.uri, h)
			}
		}
	}
}

func TestUntilWords(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "now"}, {-time.Second, "now"}, {time.Millisecond, "in 1 second"}, {59 * time.Second, "in 59 seconds"},
		{60 * time.Second, "in 1 minute"}, {61 * time.Second, "in 2 minutes"}, {59 * time.Minute, "in 59 minutes"},
		{time.Hour, "in 1 hour"}, {61 * time.Minute, "in 1 hour and 1 minute"}, {2 * time.Hour, "in 2 hours"}, {2*time.Hour + time.Second, "in 3 hours"}, {47 * time.Hour, "in 47 hours"}, {49 * time.Hour, "in 3 days"},
	} {
		if got := untilWords(t0.Add(tc.d), t0); got != tc.want {
			t.Errorf("%v: got %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestTopRanges(t *testing.T) {
	var bans []decide.Ban
	for _, k := range []string{"192.0.2.1/32", "192.0.2.2/32", "198.51.100.7/32", "2001:db8:1:1::/64", "2001:db8:1:2::/64", "10.0.0.0/8", "203.0.113.0/24", "203.0.113.9/32"} {
		bans = append(bans, decide.Ban{Key: netip.MustParsePrefix(k)})
	}
	got := topRanges(bans, 3)
	want := []rangeCount{{"192.0.2.0/24", 2}, {"2001:db8:1::/48", 2}, {"203.0.113.0/24", 2}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %v, want %v", got, want)
		}
	}
	if all := topRanges(bans, 10); len(all) != 4 || all[3] != (rangeCount{"10.0.0.0/8", 1}) {
		t.Errorf("all: got %v, want the /8 range ban last", all)
	}
}

func TestClusterStatus(t *testing.T) {
	f := newFixture(t, "")
	up := false
	f.ui.o.RedisUp = func() bool { return up }
	f.ui.o.LastSync = func() time.Time { return t0.Add(-time.Minute) }
	if r := f.req("GET", "/ui/", "", ""); !strings.Contains(r.body, "Redis down") || !strings.Contains(r.body, "synced 2026-11-28 09:59:00 UTC") {
		t.Fatalf("Redis down: %d %s", r.status, r.body)
	}
	up = true
	if r := f.req("GET", "/ui/", "", ""); !strings.Contains(r.body, "Redis up") {
		t.Fatalf("Redis up: %d %s", r.status, r.body)
	}
}

// len is the number of sessions held.
func (s *sessions) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
