package server

import (
	"bufio"
	"bytes"
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
)

// request runs the decision handler for method uri from peer with headers
// (each pair added, so a name may repeat).
func (f *fixture) request(method, uri string, peer net.Addr, headers ...string) *fasthttp.Response {
	var req fasthttp.Request
	req.Header.SetMethod(method)
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

func TestForwardedFor(t *testing.T) {
	trusted, err := decide.ParseList("127.0.0.0/8,::1/128,10.0.0.0/8,2001:db8:f::/48")
	if err != nil {
		t.Fatal(err)
	}
	tbl := NewTrusted(trusted)
	tests := []struct {
		name, xff string
		want      string // "" for no client
	}{
		{"one address", "203.0.113.9", "203.0.113.9"},
		{"rightmost untrusted wins", "198.51.100.7, 203.0.113.9", "203.0.113.9"},
		{"trusted hops skipped", "203.0.113.9, 10.0.0.5, 127.0.0.1", "203.0.113.9"},
		{"forged left of the client ignored", "127.0.0.1, 198.51.100.7, 203.0.113.9, 10.0.0.5", "203.0.113.9"},
		{"garbage left of the client ignored", "not an address, [::1]:80, 203.0.113.9", "203.0.113.9"},
		{"empty element left of the client ignored", ",, 203.0.113.9", "203.0.113.9"},
		{"no space after comma (Envoy)", "198.51.100.7,203.0.113.9,10.0.0.5", "203.0.113.9"},
		{"tabs and spaces", "198.51.100.7 ,\t203.0.113.9\t, 10.0.0.5 ", "203.0.113.9"},
		{"IPv6", "2001:db8::1, 2001:db8:f::2", "2001:db8::1"},
		{"IPv6 loopback hop", "2001:db8::1, ::1", "2001:db8::1"},
		{"mapped client is IPv4", "::ffff:203.0.113.9", "203.0.113.9"},
		{"mapped trusted hop skipped", "203.0.113.9, ::ffff:10.0.0.5", "203.0.113.9"},
		{"zone dropped", "fe80::1%eth0", "fe80::1"},
		{"only trusted", "10.0.0.5, 127.0.0.1", ""},
		{"only trusted, mapped", "::ffff:127.0.0.1", ""},
		{"empty", "", ""},
		{"blank", " \t ", ""},
		{"trailing comma", "203.0.113.9,", ""},
		{"empty element right of the client", "203.0.113.9,, 10.0.0.5", ""},
		{"port", "203.0.113.9:443", ""},
		{"bracketed IPv6", "[2001:db8::1]", ""},
		{"unknown", "unknown", ""},
		{"garbage written by a trusted hop", "203.0.113.9, unknown, 10.0.0.5", ""},
		{"space inside", "203.0.113. 9", ""},
		{"leading zeros", "203.000.113.009", ""},
		{"CIDR", "203.0.113.0/24", ""},
		{"NUL", "203.0.113.9\x00", ""},
		{"semicolon list", "198.51.100.7; 203.0.113.9", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, ok := forwardedFor([]byte(tc.xff), tbl)
			got := ""
			if ok {
				got = a.String()
			}
			if got != tc.want {
				t.Fatalf("forwardedFor(%q) = %q, want %q", tc.xff, got, tc.want)
			}
		})
	}
}

// TestForwardEndpoints checks the forward contract: the status, the client
// address each request is judged as, an empty body and no X-Doorman-*.
func TestForwardEndpoints(t *testing.T) {
	f := newFixture(t, "", "203.0.113.0/24,2001:db8:bad::/48")
	f.core.BanPrefix(netip.MustParsePrefix("198.51.100.66/32"), time.Hour, "", t0)
	tests := []struct {
		name, method, uri string
		peer              net.Addr
		headers           []string
		want              string // reason
	}{
		{"traefik allowed", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"X-Forwarded-For", "192.0.2.1"}, "allowed"},
		{"traefik denylisted", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"X-Forwarded-For", "203.0.113.9"}, "denylisted"},
		{"banned", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"X-Forwarded-For", "198.51.100.66"}, "banned"},
		{"caddy appends the query", "GET", "/forward-auth?next=/admin/", tcp("127.0.0.1"), []string{"X-Forwarded-For", "203.0.113.9"}, "denylisted"},
		{"preserved method", "POST", "/forward-auth", tcp("127.0.0.1"), []string{"X-Forwarded-For", "203.0.113.9"}, "denylisted"},
		{"HEAD", "HEAD", "/forward-auth", tcp("127.0.0.1"), []string{"X-Forwarded-For", "192.0.2.1"}, "allowed"},
		{"envoy path", "GET", "/ext-authz/admin/login/?next=%2Fadmin%2F", tcp("127.0.0.1"), []string{"x-forwarded-for", "198.51.100.7,203.0.113.9"}, "denylisted"},
		{"envoy DELETE", "DELETE", "/ext-authz/admin/x", tcp("::1"), []string{"x-forwarded-for", "192.0.2.1"}, "allowed"},
		{"envoy bare prefix", "OPTIONS", "/ext-authz", tcp("127.0.0.1"), []string{"x-forwarded-for", "203.0.113.9"}, "denylisted"},
		{"dot segments stay on the prefix", "GET", "/ext-authz/../decide", tcp("127.0.0.1"), []string{"X-Real-IP", "192.0.2.1"}, "no-client-ip"},
		{"multi-hop: trusted balancer skipped", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"X-Forwarded-For", "192.0.2.1, 203.0.113.9, 127.0.0.9"}, "denylisted"},
		{"multi-hop: forged hop left of the client", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"X-Forwarded-For", "192.0.2.1, 203.0.113.9"}, "denylisted"},
		{"X-Real-IP never read", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"X-Real-IP", "192.0.2.1", "X-Forwarded-For", "203.0.113.9"}, "denylisted"},
		{"X-Real-IP alone is no client", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"X-Real-IP", "192.0.2.1"}, "no-client-ip"},
		{"Forwarded never read", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"Forwarded", "for=192.0.2.1"}, "no-client-ip"},
		{"other client headers never read", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"X-Client-IP", "192.0.2.1", "True-Client-IP", "192.0.2.1", "X-Forwarded-For", "203.0.113.9"}, "denylisted"},
		{"no header", "GET", "/forward-auth", tcp("127.0.0.1"), nil, "no-client-ip"},
		{"empty header", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"X-Forwarded-For", ""}, "no-client-ip"},
		{"only trusted", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"X-Forwarded-For", "127.0.0.1, ::1"}, "no-client-ip"},
		{"two lines", "GET", "/forward-auth", tcp("127.0.0.1"), []string{"X-Forwarded-For", "203.0.113.9", "X-Forwarded-For", "192.0.2.1"}, "no-client-ip"},
		{"two lines, names differ in case", "GET", "/ext-authz/", tcp("127.0.0.1"), []string{"x-forwarded-for", "203.0.113.9", "X-FORWARDED-FOR", "192.0.2.1"}, "no-client-ip"},
		{"untrusted peer is the client", "GET", "/forward-auth", tcp("203.0.113.9"), []string{"X-Forwarded-For", "192.0.2.1"}, "denylisted"},
		{"untrusted peer without header", "GET", "/ext-authz/", tcp("192.0.2.7"), nil, "allowed"},
		{"untrusted mapped peer", "GET", "/forward-auth", tcp("::ffff:203.0.113.9"), []string{"X-Forwarded-For", "192.0.2.1"}, "denylisted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := f.decisions(tc.want)
			resp := f.request(tc.method, tc.uri, tc.peer, tc.headers...)
			wantStatus := 403
			if tc.want == "allowed" {
				wantStatus = 200
			}
			if resp.StatusCode() != wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode(), wantStatus)
			}
			if got := f.decisions(tc.want) - before; got != 1 {
				t.Fatalf("decisions with reason %s went up by %v, want 1", tc.want, got)
			}
			if len(resp.Body()) != 0 {
				t.Fatalf("body %q, want empty", resp.Body())
			}
			for _, h := range []string{"X-Doorman-Verdict", "X-Doorman-Reason"} {
				if v := resp.Header.Peek(h); v != nil {
					t.Fatalf("%s: %q sent; it must not reach the client", h, v)
				}
			}
			if got, want := resp.Header.Peek("Retry-After") != nil, tc.want == "banned"; got != want {
				t.Fatalf("Retry-After %q, want it only on a ban", resp.Header.Peek("Retry-After"))
			}
		})
	}
}

// decisions is the count of decisions with reason in the metrics.
func (f *fixture) decisions(reason string) float64 {
	var sb strings.Builder
	f.metrics.Write(&sb)
	verdict := "deny"
	if reason == "allowed" {
		verdict = "allow"
	}
	key := `doorman_decisions_total{verdict="` + verdict + `",reason="` + reason + `"} `
	for _, line := range strings.Split(sb.String(), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				panic("metrics: " + line)
			}
			return n
		}
	}
	return 0
}

// TestDecidePathUnchanged: every path but the two forward ones keeps
// /decide's contract (X-Real-IP, 204, X-Doorman-*), however it is spelled.
func TestDecidePathUnchanged(t *testing.T) {
	f := newFixture(t, "", "203.0.113.0/24")
	for _, uri := range []string{"/decide", "/", "/admin/", "/Forward-Auth", "/%2Fforward-auth", "/x/../forward-auth", "/ext_authz/", "//ext-authz/"} {
		t.Run(uri, func(t *testing.T) {
			resp := f.request("GET", uri, tcp("127.0.0.1"), "X-Real-IP", "192.0.2.1", "X-Forwarded-For", "203.0.113.9")
			if resp.StatusCode() != 204 || string(resp.Header.Peek("X-Doorman-Reason")) != "allowed" {
				t.Fatalf("status %d reason %q, want 204 allowed (X-Real-IP read, X-Forwarded-For not)",
					resp.StatusCode(), resp.Header.Peek("X-Doorman-Reason"))
			}
		})
	}
}

func TestForwardRetryAfter(t *testing.T) {
	f := newFixture(t, "", "")
	f.core.BanPrefix(netip.MustParsePrefix("192.0.2.1/32"), 90*time.Second+time.Millisecond, "", t0)
	f.now = t0.Add(30 * time.Second)
	resp := f.request("GET", "/forward-auth", tcp("127.0.0.1"), "X-Forwarded-For", "192.0.2.1")
	if resp.StatusCode() != 403 {
		t.Fatalf("status %d, want 403", resp.StatusCode())
	}
	if got := string(resp.Header.Peek("Retry-After")); got != "61" {
		t.Fatalf("Retry-After = %q, want 61 (rounded up)", got)
	}
}

func TestForwardUnixPeerIsTrusted(t *testing.T) {
	f := newFixture(t, "", "203.0.113.0/24")
	f.dec.Unix = true
	unix := &net.UnixAddr{Name: "@", Net: "unix"}
	if resp := f.request("GET", "/forward-auth", unix, "X-Forwarded-For", "203.0.113.1"); resp.StatusCode() != 403 {
		t.Fatalf("denylisted through a unix socket: %d, want 403", resp.StatusCode())
	}
	if resp := f.request("GET", "/forward-auth", unix, "X-Forwarded-For", "192.0.2.1"); resp.StatusCode() != 200 {
		t.Fatalf("allowed through a unix socket: %d, want 200", resp.StatusCode())
	}
	if resp := f.request("GET", "/forward-auth", unix); resp.StatusCode() != 403 {
		t.Fatalf("unix peer without header: %d, want 403", resp.StatusCode())
	}
}

func TestForwardExposeReason(t *testing.T) {
	f := newFixture(t, "10.0.0.0/8", "")
	f.dec.ExposeReason = true
	tests := []struct {
		xff, verdict, reason string
		status               int
	}{
		{"10.1.2.3", "allow", "allowed", 200},
		{"192.0.2.1", "deny", "not-allowlisted", 403},
	}
	for _, tc := range tests {
		resp := f.request("GET", "/forward-auth", tcp("127.0.0.1"), "X-Forwarded-For", tc.xff)
		if resp.StatusCode() != tc.status || string(resp.Header.Peek("X-Doorman-Verdict")) != tc.verdict ||
			string(resp.Header.Peek("X-Doorman-Reason")) != tc.reason {
			t.Errorf("%s: %d %q %q, want %d %q %q", tc.xff, resp.StatusCode(), resp.Header.Peek("X-Doorman-Verdict"),
				resp.Header.Peek("X-Doorman-Reason"), tc.status, tc.verdict, tc.reason)
		}
	}
	f.dec.DryRun = true
	resp := f.request("GET", "/ext-authz/admin/", tcp("127.0.0.1"), "x-forwarded-for", "192.0.2.1")
	if resp.StatusCode() != 200 || string(resp.Header.Peek("X-Doorman-Reason")) != "dry-run-not-allowlisted" {
		t.Fatalf("dry run: %d %q, want 200 dry-run-not-allowlisted", resp.StatusCode(), resp.Header.Peek("X-Doorman-Reason"))
	}
}

func TestForwardDryRun(t *testing.T) {
	f := newFixture(t, "10.0.0.0/8", "")
	f.dec.DryRun = true
	before := f.decisions("not-allowlisted")
	resp := f.request("GET", "/forward-auth", tcp("127.0.0.1"), "X-Forwarded-For", "192.0.2.1")
	if resp.StatusCode() != 200 || resp.Header.Peek("X-Doorman-Reason") != nil {
		t.Fatalf("got %d %q, want 200 and no X-Doorman-Reason", resp.StatusCode(), resp.Header.Peek("X-Doorman-Reason"))
	}
	if got := f.decisions("not-allowlisted") - before; got != 1 {
		t.Fatalf("would-be verdict counted %v times, want 1", got)
	}
}

func TestForwardDoesNotAllocate(t *testing.T) {
	f := newFixture(t, "", "203.0.113.0/24")
	f.core.BanPrefix(netip.MustParsePrefix("192.0.2.66/32"), time.Hour, "", t0)
	tests := []struct {
		name, uri, xff string
		peer           string
		expose         bool
	}{
		{"forward-auth allowed", "/forward-auth", "192.0.2.1", "127.0.0.1", false},
		{"forward-auth denylisted", "/forward-auth", "203.0.113.1", "127.0.0.1", false},
		{"forward-auth banned", "/forward-auth", "192.0.2.66", "127.0.0.1", false},
		{"forward-auth multi-hop", "/forward-auth?x=1", "198.51.100.1, 192.0.2.1, 127.0.0.5, 127.0.0.9", "127.0.0.1", false},
		{"forward-auth untrusted peer", "/forward-auth", "192.0.2.1", "192.0.2.9", false},
		{"forward-auth exposed", "/forward-auth", "192.0.2.66", "127.0.0.1", true},
		{"ext-authz allowed", "/ext-authz/admin/login/?next=/", "192.0.2.1", "::1", false},
		{"ext-authz banned", "/ext-authz/admin/", "198.51.100.7,192.0.2.66", "127.0.0.1", false},
		{"ext-authz IPv6", "/ext-authz/admin/", "2001:db8::1", "127.0.0.1", false},
		{"decide banned", "/decide", "", "127.0.0.1", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.dec.ExposeReason = tc.expose
			var req fasthttp.Request
			req.SetRequestURI(tc.uri)
			req.Header.Set("X-Forwarded-For", tc.xff)
			req.Header.Set("X-Real-IP", "192.0.2.66")
			var ctx fasthttp.RequestCtx
			ctx.Init(&req, tcp(tc.peer), nil)
			f.dec.Handle(&ctx) // warm up header buffers
			n := testing.AllocsPerRun(1000, func() {
				ctx.Response.Reset()
				f.dec.Handle(&ctx)
			})
			if n != 0 {
				t.Errorf("%v allocs per decision, want 0", n)
			}
		})
	}
}

// TestUnreadableHead: a request head doorman cannot read has no path to tell
// the contract by; the answer is /decide's 403, whose X-Doorman-Reason
// (no-client-ip) is the same for every client and says nothing of its
// standing.
func TestUnreadableHead(t *testing.T) {
	srv := newFuzzServers(t)
	ds := NewDecideServer(srv.dec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, raw := range []string{
		"GET /forward-auth HTTP/1.1\r\nHost: d\r\nX-Forwarded-For: 192.0.2.1\r\nCookie: " + strings.Repeat("a", 9000) + "\r\n\r\n",
		"GET /ext-authz/admin/ HTTP/1.1\r\nhost: d\r\nx-forwarded-for: 192.0.2.1\x00\r\n\r\n",
	} {
		out := serveRaw(ds, []byte(raw), netip.MustParseAddr("127.0.0.1"))
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
		if err != nil {
			t.Fatalf("%.60q: %v in %q", raw, err, out)
		}
		if resp.StatusCode != 403 || resp.Header.Get("X-Doorman-Reason") != "no-client-ip" || resp.Header.Get("Retry-After") != "" {
			t.Fatalf("%.60q: %q, want 403 with reason no-client-ip only", raw, out)
		}
	}
}

// TestForwardThroughServer sends whole requests to the decision listener's
// server, as the proxies do: bodies, HEAD, Expect, pipelining, and what it
// cannot read.
func TestForwardThroughServer(t *testing.T) {
	srv := newFuzzServers(t)
	ds := NewDecideServer(srv.dec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	allow := "X-Forwarded-For: 192.0.2.1\r\n"
	deny := "X-Forwarded-For: 203.0.113.9\r\n"
	tests := []struct {
		name, raw string
		method    string // for reading the answers
		want      []int
	}{
		{"traefik GET", "GET /forward-auth HTTP/1.1\r\nHost: doorman:9180\r\nUser-Agent: Mozilla/5.0\r\n" + allow +
			"X-Forwarded-Method: GET\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: example.com\r\nX-Forwarded-Uri: /admin/\r\nAccept-Encoding: gzip\r\n\r\n", "GET", []int{200}},
		{"traefik preserved POST, no body", "POST /forward-auth HTTP/1.1\r\nHost: doorman:9180\r\n" + deny + "\r\n", "POST", []int{403}},
		{"traefik forwardBody", "POST /forward-auth HTTP/1.1\r\nHost: d\r\n" + allow + "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\nusername=admin&password=x1y", "POST", []int{200}},
		{"envoy with_request_body", "POST /ext-authz/admin/login/ HTTP/1.1\r\nhost: example.com\r\ncontent-length: 11\r\nx-envoy-auth-partial-body: false\r\n" +
			"x-forwarded-for: 198.51.100.7,203.0.113.9\r\n\r\nhello world", "POST", []int{403}},
		{"envoy chunked body", "PUT /ext-authz/x HTTP/1.1\r\nhost: d\r\n" + allow + "transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "PUT", []int{200}},
		{"HEAD", "HEAD /ext-authz/admin/ HTTP/1.1\r\nhost: d\r\n" + allow + "\r\n", "HEAD", []int{200}},
		{"Expect 100-continue", "POST /forward-auth HTTP/1.1\r\nHost: d\r\n" + allow + "Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", "POST", []int{200}},
		{"pipelined", "GET /forward-auth HTTP/1.1\r\nHost: d\r\n" + allow + "\r\nGET /ext-authz/a HTTP/1.1\r\nHost: d\r\n" + deny + "\r\n" +
			"GET /forward-auth HTTP/1.1\r\nHost: d\r\n\r\n", "GET", []int{200, 403, 403}},
		{"body over the limit: denied, connection closed", "POST /ext-authz/admin/ HTTP/1.1\r\nhost: d\r\n" + allow + "content-length: 5000\r\n\r\n" +
			strings.Repeat("a", 5000), "POST", []int{403}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := serveRaw(ds, []byte(tc.raw), netip.MustParseAddr("127.0.0.1"))
			br := bufio.NewReader(bytes.NewReader(out))
			for i, want := range tc.want {
				resp, err := http.ReadResponse(br, &http.Request{Method: tc.method})
				if err != nil {
					t.Fatalf("answer %d: %v in %q", i, err, out)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode == 100 {
					resp, err = http.ReadResponse(br, &http.Request{Method: tc.method})
					if err != nil {
						t.Fatalf("answer %d after 100: %v in %q", i, err, out)
					}
					body, _ = io.ReadAll(resp.Body)
				}
				if resp.StatusCode != want || len(body) != 0 {
					t.Fatalf("answer %d: status %d body %q, want %d and no body; all: %q", i, resp.StatusCode, body, want, out)
				}
				for k := range resp.Header {
					if strings.HasPrefix(k, "X-Doorman") {
						t.Fatalf("answer %d: %s sent; all: %q", i, k, out)
					}
				}
			}
			if rest, _ := io.ReadAll(br); len(rest) != 0 {
				t.Fatalf("more than %d answers: %q", len(tc.want), rest)
			}
		})
	}
}
