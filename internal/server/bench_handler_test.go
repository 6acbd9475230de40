package server

import (
	"bytes"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// benchDecider is a Decider on the HTTP benchmark's tables: 100k random deny
// prefixes (none in 127.0.0.0/8), a 1k allowlist with 127.0.0.1 and
// 10.0.0.0/8, and 100k bans of addresses in 10.0.0.0/8, 10.0.0.1 among them.
func benchDecider(b *testing.B) *Decider {
	b.Helper()
	r := rand.New(rand.NewPCG(42, 42))
	loop := netip.MustParsePrefix("127.0.0.0/8")
	ten := netip.MustParsePrefix("10.0.0.0/8")
	random := func(n int) []netip.Prefix {
		out := make([]netip.Prefix, 0, n)
		for len(out) < n {
			a := netip.AddrFrom4([4]byte{byte(1 + r.IntN(222)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
			p := netip.PrefixFrom(a, 16+r.IntN(17)).Masked()
			if !p.Overlaps(loop) && !p.Overlaps(ten) {
				out = append(out, p)
			}
		}
		return out
	}
	allow := append(random(998), netip.MustParsePrefix("127.0.0.1/32"), ten)
	p := decide.Policy{MaxFailures: 5, FindTime: 10 * time.Minute, BanTime: time.Hour, BanFactor: 2,
		MaxBanTime: 168 * time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}
	core := decide.New(p, decide.NewLists(allow, random(100_000), nil), 1_000_000, 1_000_000)
	now := time.Now()
	for i := range 100_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i + 1)})
		core.Apply(decide.Ban{Key: netip.PrefixFrom(a, 32), Until: now.Add(time.Hour), Count: 1}, now)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return &Decider{Core: core, Header: "X-Real-IP", Trusted: NewTrusted([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}),
		Now: time.Now, Metrics: engine.NewMetrics(core.Stats, false, time.Now), Log: log}
}

// BenchmarkHandle is the decision handler in process, as each proxy's
// request reaches it from 127.0.0.1: nginx's subrequest to /decide with
// X-Real-IP, Traefik's and Caddy's to /forward-auth and Envoy's to
// /ext-authz/… with X-Forwarded-For, on the allow and the deny path, next to a
// handler that only answers 204 (the floor's handler).
func BenchmarkHandle(b *testing.B) {
	d := benchDecider(b)
	cases := []struct {
		name    string
		uri     string
		header  string
		ip      string
		handler fasthttp.RequestHandler
		want    int
	}{
		{"floor-204", "/decide", "X-Real-IP", "127.0.0.1", func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusNoContent) }, 204},
		{"allow", "/decide", "X-Real-IP", "127.0.0.1", d.Handle, 204},
		{"deny-banned", "/decide", "X-Real-IP", "10.0.0.1", d.Handle, 403},
		{"deny-listed", "/decide", "X-Real-IP", "", d.Handle, 403}, // filled in below
		{"forward-auth-allow", "/forward-auth", "X-Forwarded-For", "10.200.0.1", d.Handle, 200},
		{"forward-auth-deny-banned", "/forward-auth", "X-Forwarded-For", "10.0.0.1", d.Handle, 403},
		{"forward-auth-allow-3-hops", "/forward-auth", "X-Forwarded-For", "198.51.100.1, 10.200.0.1, 127.0.0.5", d.Handle, 200},
		{"ext-authz-allow", "/ext-authz/admin/login/", "X-Forwarded-For", "10.200.0.1", d.Handle, 200},
	}
	for a := range 1 << 24 { // a denylisted address for the deny-listed case
		x := netip.AddrFrom4([4]byte{byte(1 + a%222), byte(a >> 8), byte(a >> 16), 1})
		if d.Core.(*decide.Core).Lists().Denied(x) {
			cases[3].ip = x.String()
			break
		}
	}
	peer := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			var req fasthttp.Request
			req.SetRequestURI(tc.uri)
			req.Header.Set(tc.header, tc.ip)
			req.Header.Set("X-Original-URI", "/admin/login/")
			var ctx fasthttp.RequestCtx
			ctx.Init(&req, peer, nil)
			b.ReportAllocs()
			for b.Loop() {
				ctx.Response.Reset()
				tc.handler(&ctx)
			}
			if got := ctx.Response.StatusCode(); got != tc.want {
				b.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
}

// BenchmarkServer is a whole request over a kept-alive loopback TCP
// connection, client and server in this process: the floors (a fasthttp
// server whose handler only sets the status; "lean" also writes no Server
// header, as doorman does not), and doorman's decision server on each
// endpoint, on a listener watched as main.go watches it (Watch). ns/op and cpu-ns/op (this process's user+system
// CPU, less sensitive to other load on the machine) include the client;
// compare the cases, not the absolute figures.
func BenchmarkServer(b *testing.B) {
	d := benchDecider(b)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// The floors send no Date header, as doorman does not: fasthttp's Date
	// updater is a process-wide goroutine that never ends (TestMain checks
	// for leaks).
	floor := func(status int, lean bool) *fasthttp.Server {
		return &fasthttp.Server{NoDefaultDate: true, NoDefaultServerHeader: lean, NoDefaultContentType: lean,
			Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(status) }}
	}
	// The subrequest nginx sends with the shipped location snippet, and the
	// request Caddy's forward_auth sends with proxies/caddy/Caddyfile.
	nginx := func(ip string) string {
		return "GET /decide HTTP/1.1\r\nHost: doorman\r\nX-Real-IP: " + ip + "\r\n" +
			"X-Original-URI: /admin/login/\r\nX-Original-Method: GET\r\n\r\n"
	}
	caddy := func(ip string) string {
		return "GET /forward-auth HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n" +
			"X-Forwarded-For: " + ip + "\r\nX-Forwarded-Host: example.com\r\nX-Forwarded-Method: GET\r\n" +
			"X-Forwarded-Proto: https\r\nX-Forwarded-Uri: /admin/login/\r\nAccept-Encoding: gzip\r\n\r\n"
	}
	cases := []struct {
		name string
		srv  *fasthttp.Server
		req  string
		want string
	}{
		{"floor-204", floor(fasthttp.StatusNoContent, false), nginx("127.0.0.1"), " 204 "},
		{"floor-403", floor(fasthttp.StatusForbidden, false), nginx("127.0.0.1"), " 403 "},
		{"floor-lean-204", floor(fasthttp.StatusNoContent, true), nginx("127.0.0.1"), " 204 "},
		{"floor-lean-200", floor(fasthttp.StatusOK, true), caddy("10.200.0.1"), " 200 "},
		{"doorman-allow", NewDecideServer(d, log), nginx("127.0.0.1"), " 204 "},
		{"doorman-deny", NewDecideServer(d, log), nginx("10.0.0.1"), " 403 "},
		{"doorman-forward-auth-allow", NewDecideServer(d, log), caddy("10.200.0.1"), " 200 "},
		{"doorman-forward-auth-deny", NewDecideServer(d, log), caddy("10.0.0.1"), " 403 "},
	}
	for _, tc := range cases {
		// The worker pool's cleaner sleeps this long between rounds; short, so
		// it ends soon after Shutdown and the leak check in TestMain passes.
		tc.srv.MaxIdleWorkerDuration = 50 * time.Millisecond
		b.Run(tc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			if strings.HasPrefix(tc.name, "doorman") {
				ln = Watch(ln, DecideLimits)
			}
			go tc.srv.Serve(ln)
			defer tc.srv.Shutdown()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte(tc.req)
			buf := make([]byte, 4096)
			roundTrip := func() []byte {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				n := 0
				for !bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")) { // no body: the head ends the answer
					m, err := c.Read(buf[n:])
					if err != nil {
						b.Fatal(err)
					}
					n += m
				}
				return buf[:n]
			}
			if got := roundTrip(); !bytes.Contains(got, []byte(tc.want)) {
				b.Fatalf("answer %q, want status%s", got, tc.want)
			}
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				roundTrip()
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHandleParallel is BenchmarkHandle's allow case asked from
// GOMAXPROCS goroutines at once, each on a connection of its own: what
// the decision path shares between cores (BenchmarkHandle -cpu 1,2 …).
func BenchmarkHandleParallel(b *testing.B) {
	d := benchDecider(b)
	peer := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var req fasthttp.Request
		req.SetRequestURI("/decide")
		req.Header.Set("X-Real-IP", "127.0.0.1")
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, peer, nil) // a connection id of its own
		ran := false
		for pb.Next() {
			ctx.Response.Reset()
			d.Handle(&ctx)
			ran = true
		}
		if got := ctx.Response.StatusCode(); ran && got != 204 {
			b.Errorf("status %d, want 204", got)
		}
	})
}
