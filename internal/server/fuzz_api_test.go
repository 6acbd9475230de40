package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// Fuzz targets for the API's paths, methods, headers and bodies, and for raw
// bytes through both listeners' HTTP servers (parser and error handlers
// included).

const fuzzToken = "fuzz-token"

// fuzzServers is a Core behind a decision handler and an API (memory only,
// token required), with the clock fixed.
type fuzzServers struct {
	core *decide.Core
	dec  *Decider
	api  *API
	now  time.Time
}

func newFuzzServers(tb testing.TB) *fuzzServers {
	tb.Helper()
	deny, err := decide.ParseList("203.0.113.0/24")
	if err != nil {
		tb.Fatal(err)
	}
	trusted, err := decide.ParseList("127.0.0.0/8,::1/128")
	if err != nil {
		tb.Fatal(err)
	}
	p := decide.Policy{MaxFailures: 3, FindTime: 10 * time.Minute, BanTime: time.Hour, BanFactor: 2,
		MaxBanTime: 168 * time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}
	s := &fuzzServers{core: decide.New(p, decide.NewLists(nil, deny, nil), 64, 64),
		now: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
	clock := func() time.Time { return s.now }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := engine.NewMetrics(s.core.Stats, false, clock)
	local := engine.NewLocal(s.core, nil, log, m)
	s.dec = &Decider{Core: local, Header: "X-Real-IP", Trusted: NewTrusted(trusted), Now: clock, Metrics: m, Log: log}
	s.api = &API{Service: local, Token: fuzzToken, Now: clock, Metrics: m, Log: log}
	return s
}

// state is what a request could change: ban records and failures tracked.
func (s *fuzzServers) state() string {
	var b strings.Builder
	for _, r := range s.core.Records(s.now) {
		b.WriteString(r.Key.String() + r.Until.String() + "\n")
	}
	b.WriteString(strconv.Itoa(s.core.Stats(s.now).Tracked))
	return b.String()
}

// FuzzAPIRequest sends one request with an arbitrary method, request URI,
// body and token (or none) to the API handler. Invariants: no panic, never
// a 5xx, a JSON answer (except /metrics, 204 and HEAD), a JSON error for
// every 4xx, and a 4xx changes nothing, except DELETE's 404 (no active ban),
// which still clears the address's failures and expired ban record.
func FuzzAPIRequest(f *testing.F) {
	seeds := []struct {
		method, uri, body string
		auth              bool
	}{
		{"POST", "/v1/failures", `{"ip":"192.0.2.7","username":"admin"}`, true},
		{"POST", "/v1/successes", `{"ip":"192.0.2.7"}`, true},
		{"GET", "/v1/bans", "", true},
		{"POST", "/v1/bans", `{"ip":"198.51.100.0/24","duration":"1h","reason":"x"}`, true},
		{"DELETE", "/v1/bans/192.0.2.7", "", true},
		{"DELETE", "/v1/bans/198.51.100.0/24", "", true},
		{"DELETE", "/v1/bans/%2F%2e%2e", "", true},
		{"GET", "/v1/decide?ip=2001:db8::1%25eth0", "", true},
		{"GET", "/v1/decide?ip=::ffff:192.0.2.1&ip=x", "", true},
		{"GET", "/healthz", "", false},
		{"HEAD", "/healthz", "", false},
		{"GET", "/metrics", "", false},
		{"PUT", "/v1/bans", `{}`, true},
		{"GET", "/v1/bans", "", false},
		{"POST", "/v1//failures", `{"ip":"192.0.2.7"}`, true},
		{"GET", "/v1/../healthz", "", false},
		{"OPTIONS", "*", "", true},
		{"POST", "/v1/failures", `{"ip":"192.0.2.7"}` + strings.Repeat(" ", 5000), true},
	}
	for _, s := range seeds {
		f.Add(s.method, s.uri, []byte(s.body), s.auth)
	}
	srv := newFuzzServers(f)
	f.Fuzz(func(t *testing.T, method, uri string, body []byte, auth bool) {
		var req fasthttp.Request
		req.Header.SetMethod(method)
		req.SetRequestURI(uri)
		req.SetBody(body)
		if auth {
			req.Header.Set("Authorization", "Bearer "+fuzzToken)
		}
		before := srv.state()
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
		srv.api.Handle(&ctx)
		status := ctx.Response.StatusCode()
		out := ctx.Response.Body()
		path := string(ctx.Path())
		if status < 200 || status >= 500 {
			t.Fatalf("%s %q: status %d %q", method, uri, status, out)
		}
		if status == 401 && auth {
			t.Fatalf("%s %q with the token: 401", method, uri)
		}
		if status != 401 && !auth && strings.HasPrefix(path, "/v1/") {
			t.Fatalf("%s %q without the token: status %d", method, uri, status)
		}
		switch {
		case path == "/metrics" && status == 200, status == 204, method == "HEAD":
		case !json.Valid(out):
			t.Fatalf("%s %q: status %d, not JSON: %q", method, uri, status, out)
		case status >= 400:
			var e struct{ Error string }
			if json.Unmarshal(out, &e) != nil || e.Error == "" {
				t.Fatalf("%s %q: status %d without an error message: %q", method, uri, status, out)
			}
			if after := srv.state(); after != before && !(method == "DELETE" && status == 404) {
				t.Fatalf("%s %q: status %d changed the state", method, uri, status)
			}
		}
	})
}

// memConn is a net.Conn that reads a fixed input and collects the output.
type memConn struct {
	in   *bytes.Reader
	out  bytes.Buffer
	peer net.Addr
}

func (c *memConn) Read(b []byte) (int, error)       { return c.in.Read(b) }
func (c *memConn) Write(b []byte) (int, error)      { return c.out.Write(b) }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9180} }
func (c *memConn) RemoteAddr() net.Addr             { return c.peer }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// serveRaw runs one connection carrying raw through s, from peer, and
// returns what the server wrote.
func serveRaw(s *fasthttp.Server, raw []byte, peer netip.Addr) []byte {
	c := &memConn{in: bytes.NewReader(raw), peer: net.TCPAddrFromAddrPort(netip.AddrPortFrom(peer, 40000))}
	s.ServeConn(c) // the error is the connection's end: EOF or a bad request
	return c.out.Bytes()
}

// FuzzDecideRaw feeds raw bytes to the decision listener's server, from a
// trusted and an untrusted peer. Every answer is 204 or 403 with an empty
// body; without an X-Real-IP header a trusted peer's request is never
// allowed; an untrusted peer is judged by its own address.
func FuzzDecideRaw(f *testing.F) {
	for _, s := range []string{
		"GET /decide HTTP/1.1\r\nHost: d\r\nX-Real-IP: 192.0.2.1\r\n\r\n",
		"GET /decide HTTP/1.1\r\nHost: d\r\nX-Real-IP: 203.0.113.5\r\n\r\n",
		"GET /decide HTTP/1.1\r\nHost: d\r\nx-real-ip: 192.0.2.1\r\nX-Real-IP: 192.0.2.1\r\n\r\n",
		"GET /decide HTTP/1.1\r\nHost: d\r\nX-Real-IP: 192.0.2.1\r\n\r\nGET /decide HTTP/1.1\r\nHost: d\r\n\r\n",
		"GET /decide HTTP/1.0\r\nX-Real-IP: ::ffff:192.0.2.1\r\n\r\n",
		"GET /decide HTTP/1.1\r\nHost: d\r\nX-Real-IP: 192.0.2.1\r\n folded\r\n\r\n",
		"POST /decide HTTP/1.1\r\nHost: d\r\nX-Real-IP: 192.0.2.1\r\nContent-Length: 5\r\n\r\nhello",
		"POST /decide HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\nX-Real-IP: 192.0.2.1\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"GET /decide HTTP/1.1\r\nHost: d\r\nX-Real-IP: 192.0.2.1\x00\r\n\r\n",
		"\r\n\r\n",
		"GET / HTTP/1.1\r\n" + strings.Repeat("X-A: b\r\n", 1200) + "\r\n",
		"GET /forward-auth HTTP/1.1\r\nHost: d\r\nX-Forwarded-For: 192.0.2.1, 127.0.0.1\r\n\r\n",
		"POST /ext-authz/admin/ HTTP/1.1\r\nHost: d\r\nx-forwarded-for: 203.0.113.5\r\nContent-Length: 2\r\n\r\nhi",
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	srv := newFuzzServers(f)
	ds := NewDecideServer(srv.dec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.Fuzz(func(t *testing.T, raw []byte, trusted bool) {
		peer, peerReason := netip.MustParseAddr("127.0.0.1"), ""
		if !trusted {
			peer, peerReason = netip.MustParseAddr("203.0.113.9"), "denylisted"
		}
		out := serveRaw(ds, raw, peer)
		br := bufio.NewReader(bytes.NewReader(out))
		for n := 0; ; n++ {
			if _, err := br.Peek(1); err == io.EOF {
				return // no answer at all is fine: nginx fails closed on it
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatalf("answer %d: %v in %q", n, err, out)
			}
			b, _ := io.ReadAll(resp.Body)
			reason := resp.Header.Get("X-Doorman-Reason")
			lower := bytes.ToLower(raw)
			forward := bytes.Contains(lower, []byte("/forward-auth")) || bytes.Contains(lower, []byte("/ext-authz"))
			if resp.StatusCode == 200 || forward && resp.StatusCode == 403 && reason == "" {
				// /forward-auth and /ext-authz: 200 or 403, no X-Doorman-*,
				// allowed only from a trusted peer naming the client in
				// X-Forwarded-For (the untrusted peer is denylisted).
				switch {
				case !forward:
					t.Fatalf("answer %d: 200 without a /forward-auth or /ext-authz path in %q", n, raw)
				case len(b) != 0 || reason != "":
					t.Fatalf("answer %d: body %q, reason %q", n, b, reason)
				case resp.StatusCode == 200 && (!trusted || !bytes.Contains(lower, []byte("x-forwarded-for"))):
					t.Fatalf("answer %d: allowed without a trusted peer's X-Forwarded-For", n)
				}
				continue
			}
			switch {
			case resp.StatusCode != 204 && resp.StatusCode != 403:
				t.Fatalf("answer %d: status %d", n, resp.StatusCode)
			case len(b) != 0:
				t.Fatalf("answer %d: body %q", n, b)
			case (resp.StatusCode == 204) != (reason == "allowed"):
				t.Fatalf("answer %d: status %d with reason %q", n, resp.StatusCode, reason)
			case resp.StatusCode == 204 && !bytes.Contains(bytes.ToLower(raw), []byte("x-real-ip")):
				t.Fatalf("answer %d: allowed without an X-Real-IP header", n)
			case !trusted && reason != peerReason && reason != "no-client-ip":
				t.Fatalf("answer %d: untrusted peer judged %q, want %q (or no-client-ip for an unreadable request)", n, reason, peerReason)
			}
		}
	})
}

// FuzzAPIRaw feeds raw bytes to the API listener's server. Every answer is
// below 500, and every 4xx carries a JSON error.
func FuzzAPIRaw(f *testing.F) {
	auth := "Authorization: Bearer " + fuzzToken + "\r\n"
	for _, s := range []string{
		"POST /v1/failures HTTP/1.1\r\nHost: d\r\n" + auth + "Content-Length: 18\r\n\r\n" + `{"ip":"192.0.2.1"}`,
		"POST /v1/bans HTTP/1.1\r\nHost: d\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\n12\r\n" + `{"ip":"192.0.2.1"}` + "\r\n0\r\n\r\n",
		"GET /v1/bans HTTP/1.1\r\nHost: d\r\n" + auth + "\r\nGET /healthz HTTP/1.1\r\nHost: d\r\n\r\n",
		"DELETE /v1/bans/192.0.2.1 HTTP/1.1\r\nHost: d\r\n" + auth + "\r\n",
		"GET /v1/decide?ip=192.0.2.1 HTTP/1.1\r\nHost: d\r\n" + auth + "\r\n",
		"POST /v1/failures HTTP/1.1\r\nHost: d\r\n" + auth + "Content-Length: 99999\r\n\r\n{",
		"POST /v1/failures HTTP/1.1\r\nHost: d\r\n" + auth + "Content-Length: -1\r\n\r\n",
		"POST /v1/failures HTTP/1.1\r\nHost: d\r\n" + auth + "Expect: 100-continue\r\nContent-Length: 5\r\n\r\n{}{}{",
		"GARBAGE\r\n\r\n",
		"GET /healthz HTTP/1.1\r\nHost: d\r\n" + strings.Repeat("X-A: b\r\n", 1200) + "\r\n",
	} {
		f.Add([]byte(s))
	}
	srv := newFuzzServers(f)
	as := NewAPIServer(srv.api, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		out := serveRaw(as, raw, netip.MustParseAddr("127.0.0.1"))
		if len(out) == 0 {
			return
		}
		method, _, _ := bytes.Cut(raw, []byte(" "))
		br := bufio.NewReader(bytes.NewReader(out))
		resp, err := http.ReadResponse(br, &http.Request{Method: string(method)})
		for err == nil && resp.StatusCode == 100 {
			resp, err = http.ReadResponse(br, &http.Request{Method: string(method)})
		}
		if err != nil {
			t.Fatalf("first answer: %v in %q", err, out)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 500 {
			t.Fatalf("status %d: %q", resp.StatusCode, b)
		}
		if resp.StatusCode >= 400 && string(method) != "HEAD" {
			var e struct{ Error string }
			if json.Unmarshal(b, &e) != nil || e.Error == "" {
				t.Fatalf("status %d without a JSON error: %q", resp.StatusCode, b)
			}
		}
	})
}
