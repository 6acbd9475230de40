package ui

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func TestLimiter(t *testing.T) {
	l := newLimiter()
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for range LoginPerAddr {
		l.failed(a, false, t0)
	}
	if ok, wait := l.allowed(a, false, t0.Add(time.Minute)); ok || wait != LoginWindow-time.Minute {
		t.Errorf("a past its limit: allowed %v, wait %v; want false, %v", ok, wait, LoginWindow-time.Minute)
	}
	if ok, _ := l.allowed(a, false, t0.Add(LoginWindow)); !ok {
		t.Errorf("a refused a window after its failures")
	}
	if ok, _ := l.allowed(b, false, t0); !ok {
		t.Errorf("b refused for a's failures")
	}
	// An IPv6 /64 is one address.
	for i := range LoginPerAddr {
		l.failed(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), false, t0)
	}
	if ok, _ := l.allowed(netip.MustParseAddr("2001:db8::ffff:1"), false, t0); ok {
		t.Errorf("another address of a /64 past its limit allowed")
	}
	if ok, _ := l.allowed(netip.MustParseAddr("2001:db8:0:1::1"), false, t0); !ok {
		t.Errorf("the next /64 refused")
	}
	// The total limit holds across addresses, and for operators only for
	// operators' own failures.
	for i := range LoginTotal - 2*LoginPerAddr {
		l.failed(addr(i), false, t0)
	}
	if ok, _ := l.allowed(b, false, t0); ok {
		t.Errorf("b allowed past the total limit")
	}
	if ok, _ := l.allowed(b, true, t0); !ok {
		t.Errorf("b as an operator refused by the others' failures")
	}
	if ok, _ := l.allowed(b, false, t0.Add(LoginWindow)); !ok {
		t.Errorf("b refused a window later")
	}
	// The operators' pool has its own total.
	for i := range LoginTotal {
		l.failed(addr(1000+i), true, t0)
	}
	if ok, _ := l.allowed(b, true, t0); ok {
		t.Errorf("operator b allowed past the operators' total")
	}
	// Memory is bounded.
	for i := range MaxAddrs + 10 {
		l.failed(addr(i), false, t0.Add(2*LoginWindow))
	}
	if n := len(l.byAddr); n > MaxAddrs {
		t.Errorf("%d addresses held, want at most %d", n, MaxAddrs)
	}
}

// TestLimiterSlides: 50 wrong tokens just before the end of a window and
// 50 just after would be 100 comparisons in two seconds with a window that
// resets; sliding, the second 50 wait until the first have aged.
func TestLimiterSlides(t *testing.T) {
	l := newLimiter()
	tried := func(at time.Time, from int) int {
		n := 0
		for i := range LoginTotal {
			if ok, _ := l.allowed(addr(from+i), false, at); ok {
				l.failed(addr(from+i), false, at)
				n++
			}
		}
		return n
	}
	l.failed(addr(9999), false, t0) // the window, if fixed, starts here
	end := t0.Add(LoginWindow)
	if n := tried(end.Add(-time.Second), 0); n != LoginTotal-1 {
		t.Fatalf("before the boundary: %d tried, want %d", n, LoginTotal-1)
	}
	if n := tried(end.Add(time.Second), 100); n != 1 {
		t.Errorf("after the boundary: %d tried, want 1 (the first failure aged out)", n)
	}
	if ok, wait := l.allowed(addr(200), false, end.Add(time.Second)); ok || wait != LoginWindow-2*time.Second {
		t.Errorf("then: allowed %v, wait %v; want false, %v", ok, wait, LoginWindow-2*time.Second)
	}
	if n := tried(end.Add(LoginWindow-time.Second), 300); n != LoginTotal-1 {
		t.Errorf("a window after the second batch: %d tried, want %d", n, LoginTotal-1)
	}
}

// TestLimiterRandom: for random wrong tokens over hours, no window of
// LoginWindow holds more than LoginTotal comparisons in a pool or more than
// LoginPerAddr from one address, checked against the list of every
// comparison made.
func TestLimiterRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	l := newLimiter()
	type try struct {
		at time.Time
		a  netip.Addr
		op bool
	}
	var made []try
	now := t0
	for range 20000 {
		now = now.Add(time.Duration(rng.IntN(int(30 * time.Second))))
		tr := try{now, addr(rng.IntN(20)), rng.IntN(4) == 0}
		if ok, _ := l.allowed(tr.a, tr.op, now); ok {
			l.failed(tr.a, tr.op, now)
			made = append(made, tr)
		}
	}
	for i, x := range made {
		pool, same := 0, 0
		for j := i; j >= 0 && x.at.Sub(made[j].at) < LoginWindow; j-- {
			if made[j].op == x.op {
				pool++
			}
			if made[j].a == x.a {
				same++
			}
		}
		if pool > LoginTotal || same > LoginPerAddr {
			t.Fatalf("at %v: %d in the pool, %d from %v within a window", x.at, pool, same, x.a)
		}
	}
	if len(made) < 1000 {
		t.Errorf("only %d comparisons made: the limiter refuses too much", len(made))
	}
}

// TestOperatorSignsInDuringSpray: 50 wrong tokens from addresses of the
// internet close the login for the internet, not for the operator on
// loopback, on the unix socket or in DOORMAN_ALLOW.
func TestOperatorSignsInDuringSpray(t *testing.T) {
	f := newFixture(t, "s3cret")
	f.ui.o.Operators = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	login := func(peer net.Addr, token string) resp {
		var r fasthttp.Request
		r.Header.SetMethod("POST")
		r.SetRequestURI("/ui/login")
		r.Header.SetHost("doorman.example:9181")
		r.Header.SetContentType("application/x-www-form-urlencoded")
		r.SetBodyString("token=" + token)
		var ctx fasthttp.RequestCtx
		ctx.Init(&r, peer, nil)
		f.ui.Handle(&ctx)
		return resp{ctx.Response.StatusCode(), string(ctx.Response.Body()), &ctx.Response.Header}
	}
	tcpFrom := func(s string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(s), Port: 40000} }
	for i := range LoginTotal {
		peer := tcpFrom("203.0.113." + strconv.Itoa(i+1))
		if r := login(peer, "guess"); r.status != 401 {
			t.Fatalf("spray %d: %d, want 401", i, r.status)
		}
		f.now = f.now.Add(time.Second)
	}
	if r := login(tcpFrom("192.0.2.200"), "s3cret"); r.status != 429 {
		t.Errorf("another address of the internet after the spray: %d, want 429", r.status)
	}
	for _, tc := range []struct {
		name string
		peer net.Addr
	}{
		{"loopback", tcpFrom("127.0.0.1")},
		{"IPv6 loopback", tcpFrom("::1")},
		{"unix socket", &net.UnixAddr{Name: "/run/doorman/api.sock", Net: "unix"}},
		{"DOORMAN_ALLOW", tcpFrom("198.51.100.7")},
	} {
		r := login(tc.peer, "s3cret")
		if r.status != 303 || !strings.Contains(string(r.header.Peek("Set-Cookie")), cookieName+"=") {
			t.Errorf("%s during the spray: %d %q, want 303 with a session", tc.name, r.status, r.body)
		}
	}
	// The operator's own wrong tokens still meet the per-address limit.
	for range LoginPerAddr {
		login(tcpFrom("127.0.0.1"), "typo")
	}
	if r := login(tcpFrom("127.0.0.1"), "s3cret"); r.status != 429 {
		t.Errorf("loopback past its own limit: %d, want 429", r.status)
	}
}
