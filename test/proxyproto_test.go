package test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Traefik's forwardAuth, Envoy's ext_authz HTTP service and ingress-nginx's
// auth-keepalive cannot be installed here, so their contracts with doorman
// are tested at the protocol level: a real doorman gets each request exactly
// as that proxy builds it (from the proxy's documentation and source: Traefik
// v3 pkg/middlewares/auth/forward.go and pkg/middlewares/forwardedheaders,
// Envoy's ext_authz_http_impl.cc and HTTP connection manager, ingress-nginx's
// auth location and ngx_conf_external_auth.lua), from 127.0.0.1, the proxy.
// 127.0.0.20 is a load balancer in front of the proxy.

// proxyProtoEnv trusts the proxy (127.0.0.1) and the balancer (127.0.0.20).
func proxyProtoEnv() map[string]string {
	return proxyEnv("DOORMAN_TRUSTED_PROXIES", "127.0.0.1/32,127.0.0.20/32")
}

// reasonFor is the verdict doorman must give each address under proxyEnv
// once 127.0.0.60 is banned.
var reasonFor = map[string]string{
	"127.0.0.10":        "allowed",
	"127.0.0.11":        "allowed",
	"::ffff:127.0.0.10": "allowed",
	"127.0.0.66":        "denylisted",
	"127.0.0.200":       "not-allowlisted",
	"2001:db8::1":       "not-allowlisted",
	"127.0.0.60":        "banned",
	"127.0.0.20":        "allowed", // the balancer itself, were it judged
	"":                  "no-client-ip",
}

// judgedAs checks an answer of doorman's forward contract and that it was
// about client (a key of reasonFor): 200 or 403, the right decision counted,
// an empty body, Retry-After exactly on a ban, no X-Doorman-*.
func judgedAs(t *testing.T, d *Doorman, name, client string, before map[string]float64, status int, header http.Header, body string) {
	t.Helper()
	reason := reasonFor[client]
	want, verdict := 403, "deny"
	if reason == "allowed" {
		want, verdict = 200, "allow"
	}
	if status != want || body != "" {
		t.Errorf("%s: status %d body %.100q, want %d (%s) and no body", name, status, body, want, reason)
	}
	key := `doorman_decisions_total{verdict="` + verdict + `",reason="` + reason + `"}`
	if got := scrapeMetrics(t, d)[key] - before[key]; got != 1 {
		t.Errorf("%s: %s went up by %v, want 1 (judged as %q)", name, key, got, client)
	}
	if got, ban := header.Get("Retry-After") != "", reason == "banned"; got != ban {
		t.Errorf("%s: Retry-After %q, want one only on a ban", name, header.Get("Retry-After"))
	}
	noDoormanHeaders(t, name, header)
}

// traefikOptions are the forwardAuth middleware's and the entry point's
// settings that change the request doorman gets.
type traefikOptions struct {
	trustForwardHeader    *bool    // nil: unset (the legacy behaviour)
	authRequestHeaders    []string // empty: every header of the client
	preserveRequestMethod bool
	forwardBody           bool
	trustedIPs            []string // entryPoints.<name>.forwardedHeaders.trustedIPs
	insecure              bool     // entryPoints.<name>.forwardedHeaders.insecure
}

var hopByHop = []string{"Connection", "Keep-Alive", "Te", "Trailer", "Trailers", "Transfer-Encoding", "Upgrade"}

// traefikAuthRequest builds the request Traefik sends to address for the
// client request in, which arrived from peer (ip:port) on the entry point.
//
// The entry point first drops every X-Forwarded-* header and X-Real-Ip unless
// the peer is in trustedIPs (or insecure is set), sets X-Real-Ip to the peer
// when absent, and joins repeated X-Forwarded-For lines into one. The
// middleware then copies the client's headers less hop-by-hop ones, drops the
// X-Forwarded-* ones when trustForwardHeader is false, keeps only
// authRequestHeaders when set (plus the X-Forwarded-* ones when
// trustForwardHeader is true), and sets X-Forwarded-For: the peer alone
// (trustForwardHeader unset or false) or the X-Forwarded-For it kept, then
// ", ", then the peer (true); then X-Forwarded-Method, -Proto, -Host, -Uri.
// The method is GET unless preserveRequestMethod; the body is sent only with
// forwardBody. Go's HTTP client writes it, as in Traefik.
func traefikAuthRequest(t *testing.T, address string, in *http.Request, peer string, o traefikOptions) *http.Request {
	t.Helper()
	peerIP, _, err := net.SplitHostPort(peer)
	if err != nil {
		t.Fatal(err)
	}
	isXHeader := func(k string) bool {
		return strings.HasPrefix(k, "X-Forwarded-") || k == "X-Real-Ip" || k == "X-Scheme"
	}
	// The entry point.
	h := in.Header.Clone()
	trusted := o.insecure
	for _, ip := range o.trustedIPs {
		trusted = trusted || ip == peerIP
	}
	if !trusted {
		for k := range h {
			if isXHeader(k) {
				delete(h, k)
			}
		}
	}
	if h.Get("X-Real-Ip") == "" {
		h.Set("X-Real-Ip", peerIP)
	}
	if xff := h.Values("X-Forwarded-For"); len(xff) > 0 {
		h.Set("X-Forwarded-For", strings.Join(xff, ", "))
	}
	// The middleware.
	method := http.MethodGet
	if o.preserveRequestMethod {
		method = in.Method
	}
	var body io.Reader
	if o.forwardBody && in.Body != nil {
		b, err := io.ReadAll(in.Body)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	out, err := http.NewRequest(method, address, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		out.Header[k] = append([]string(nil), v...)
	}
	for _, c := range h.Values("Connection") {
		for _, k := range strings.Split(c, ",") {
			out.Header.Del(strings.TrimSpace(k))
		}
	}
	for _, k := range hopByHop {
		out.Header.Del(k)
	}
	trust := o.trustForwardHeader != nil && *o.trustForwardHeader
	if o.trustForwardHeader != nil && !trust {
		for k := range out.Header {
			if isXHeader(k) {
				out.Header.Del(k)
			}
		}
	}
	if in.Header.Get("User-Agent") == "" {
		out.Header.Set("User-Agent", "")
	}
	if len(o.authRequestHeaders) > 0 {
		keep := http.Header{}
		for k, v := range out.Header {
			allowed := trust && isXHeader(k)
			for _, a := range o.authRequestHeaders {
				allowed = allowed || http.CanonicalHeaderKey(a) == k
			}
			if allowed {
				keep[k] = v
			}
		}
		out.Header = keep
	}
	xff := peerIP
	if prior := out.Header.Values("X-Forwarded-For"); trust && len(prior) > 0 {
		xff = strings.Join(prior, ", ") + ", " + peerIP
	}
	out.Header.Set("X-Forwarded-For", xff)
	out.Header.Set("X-Forwarded-Method", in.Method)
	out.Header.Set("X-Forwarded-Proto", "https")
	out.Header.Set("X-Forwarded-Host", in.Host)
	out.Header.Set("X-Forwarded-Uri", in.URL.RequestURI())
	return out
}

// clientRequest is a browser's request to the protected site.
func clientRequest(t *testing.T, method, body string, headers ...string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r, err := http.NewRequest(method, "https://example.com/admin/login/?next=/admin/", rd)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("User-Agent", "Mozilla/5.0")
	r.Header.Set("Accept", "text/html")
	r.Header.Set("Cookie", "sessionid=abc; csrftoken=def")
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return r
}

func TestTraefikForwardAuthContract(t *testing.T) {
	d := startDoorman(t, proxyProtoEnv())
	if code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": "127.0.0.60", "duration": "1h"}); code != 201 {
		t.Fatalf("manual ban: status %d, body %s", code, body)
	}
	address := "http://" + d.DecideAddr + "/forward-auth"
	yes, no := true, false
	forged := []string{"X-Forwarded-For", "127.0.0.10", "X-Real-IP", "127.0.0.10", "X-Client-IP", "127.0.0.10", "Forwarded", "for=127.0.0.10"}
	tests := []struct {
		name   string
		in     *http.Request
		peer   string
		o      traefikOptions
		client string
	}{
		{"edge, defaults", clientRequest(t, "GET", ""), "127.0.0.66:50000", traefikOptions{}, "127.0.0.66"},
		{"edge, defaults, forged headers", clientRequest(t, "GET", "", forged...), "127.0.0.66:50000", traefikOptions{}, "127.0.0.66"},
		{"edge, allowed client claiming a denied address", clientRequest(t, "GET", "", "X-Forwarded-For", "127.0.0.66"), "127.0.0.10:50000", traefikOptions{}, "127.0.0.10"},
		{"edge, banned client", clientRequest(t, "GET", "", forged...), "127.0.0.60:50000", traefikOptions{trustForwardHeader: &no}, "127.0.0.60"},
		{"edge, trustForwardHeader, untrusted peer's headers dropped", clientRequest(t, "GET", "", forged...), "127.0.0.66:50000", traefikOptions{trustForwardHeader: &yes}, "127.0.0.66"},
		{"edge, trustForwardHeader and insecure entry point: forged hop left of the peer", clientRequest(t, "GET", "", forged...), "127.0.0.66:50000",
			traefikOptions{trustForwardHeader: &yes, insecure: true}, "127.0.0.66"},
		{"edge, insecure entry point, client repeats X-Forwarded-For (joined)", clientRequest(t, "GET", "", "X-Forwarded-For", "127.0.0.10", "X-Forwarded-For", "127.0.0.11"), "127.0.0.200:50000",
			traefikOptions{trustForwardHeader: &yes, insecure: true}, "127.0.0.200"},
		{"edge, IPv6 client", clientRequest(t, "GET", "", forged...), "[2001:db8::1]:50000", traefikOptions{trustForwardHeader: &yes}, "2001:db8::1"},
		{"behind the balancer: the client it appended", clientRequest(t, "GET", "", "X-Forwarded-For", "127.0.0.10, 127.0.0.66"), "127.0.0.20:50000",
			traefikOptions{trustForwardHeader: &yes, trustedIPs: []string{"127.0.0.20"}}, "127.0.0.66"},
		{"behind the balancer: allowed client, denied claim before it", clientRequest(t, "GET", "", "X-Forwarded-For", "127.0.0.66, 127.0.0.10"), "127.0.0.20:50000",
			traefikOptions{trustForwardHeader: &yes, trustedIPs: []string{"127.0.0.20"}}, "127.0.0.10"},
		{"behind the balancer, balancer's chain of two", clientRequest(t, "GET", "", "X-Forwarded-For", "127.0.0.10, 127.0.0.200, 127.0.0.20"), "127.0.0.20:50000",
			traefikOptions{trustForwardHeader: &yes, trustedIPs: []string{"127.0.0.20"}}, "127.0.0.200"},
		{"behind the balancer, entry point not trusting it: only trusted hops, no client", clientRequest(t, "GET", "", "X-Forwarded-For", "127.0.0.66"), "127.0.0.20:50000",
			traefikOptions{trustForwardHeader: &yes}, ""},
		{"preserveRequestMethod POST", clientRequest(t, "POST", "username=admin&password=x"), "127.0.0.66:50000", traefikOptions{preserveRequestMethod: true}, "127.0.0.66"},
		{"preserveRequestMethod DELETE", clientRequest(t, "DELETE", ""), "127.0.0.10:50000", traefikOptions{preserveRequestMethod: true}, "127.0.0.10"},
		{"preserveRequestMethod HEAD", clientRequest(t, "HEAD", ""), "127.0.0.10:50000", traefikOptions{preserveRequestMethod: true}, "127.0.0.10"},
		{"forwardBody, 1 KB", clientRequest(t, "POST", strings.Repeat("a=b&", 256)), "127.0.0.10:50000",
			traefikOptions{preserveRequestMethod: true, forwardBody: true}, "127.0.0.10"},
		{"authRequestHeaders", clientRequest(t, "GET", "", forged...), "127.0.0.66:50000",
			traefikOptions{trustForwardHeader: &yes, authRequestHeaders: []string{"X-Forwarded-For"}}, "127.0.0.66"},
		{"authRequestHeaders, 12 KB of cookies left out", clientRequest(t, "GET", "", "Cookie", strings.Repeat("c", 12000)), "127.0.0.10:50000",
			traefikOptions{trustForwardHeader: &no, authRequestHeaders: []string{"Accept"}}, "127.0.0.10"},
	}
	c := clientFrom("127.0.0.1")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := traefikAuthRequest(t, address, tc.in, tc.peer, tc.o)
			before := scrapeMetrics(t, d)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			judgedAs(t, d, tc.name, tc.client, before, resp.StatusCode, resp.Header, string(body))
		})
	}

	// What doorman cannot read it refuses: a forwarded body over 4 KiB, or
	// a head over 8 KiB (all the client's cookies, without
	// authRequestHeaders). Denied, whoever the client.
	for _, tc := range []struct {
		name string
		in   *http.Request
		o    traefikOptions
	}{
		{"forwardBody over 4 KiB", clientRequest(t, "POST", strings.Repeat("a", 5000)), traefikOptions{preserveRequestMethod: true, forwardBody: true}},
		{"12 KB of cookies", clientRequest(t, "GET", "", "Cookie", strings.Repeat("c", 12000)), traefikOptions{}},
	} {
		req := traefikAuthRequest(t, address, tc.in, "127.0.0.10:50000", tc.o)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("%s: status %d, want 403", tc.name, resp.StatusCode)
		}
	}
}

// envoyCheck is the request Envoy's ext_authz HTTP client sends to doorman
// with path_prefix /ext-authz: the original method, the prefix and the
// original path, the host (authority), content-length (0, or the length of the
// buffered body with with_request_body), the allowed headers (here
// x-forwarded-for, as the connection manager left it), and the router's
// timeout header; names in lower case, as Envoy's HTTP/1 codec writes them.
func envoyCheck(method, path, xff, body string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s /ext-authz%s HTTP/1.1\r\nhost: example.com\r\ncontent-length: %d\r\n", method, path, len(body))
	if xff != "" {
		b.WriteString("x-forwarded-for: " + xff + "\r\n")
	}
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("x-envoy-expected-rq-timeout-ms: 2000\r\n\r\n" + body)
	return b.String()
}

func TestEnvoyExtAuthzContract(t *testing.T) {
	d := startDoorman(t, proxyProtoEnv())
	if code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": "127.0.0.60", "duration": "1h"}); code != 201 {
		t.Fatalf("manual ban: status %d, body %s", code, body)
	}
	// Envoy keeps connections to the authorization cluster open: every
	// check goes over one connection, as from Envoy's pool.
	conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}).Dial("tcp", d.DecideAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	tests := []struct {
		name, req, method, client string
	}{
		// use_remote_address: true, no trusted hops: Envoy appends the peer.
		{"edge, no client header", envoyCheck("GET", "/admin/", "127.0.0.66", ""), "GET", "127.0.0.66"},
		{"edge, client forged x-forwarded-for", envoyCheck("GET", "/admin/", "127.0.0.10,127.0.0.66", ""), "GET", "127.0.0.66"},
		{"edge, client forged a chain with a trusted hop", envoyCheck("GET", "/admin/", "127.0.0.10, 127.0.0.1,127.0.0.200", ""), "GET", "127.0.0.200"},
		{"edge, allowed client claiming a denied address", envoyCheck("GET", "/admin/", "127.0.0.66,127.0.0.10", ""), "GET", "127.0.0.10"},
		{"edge, banned client", envoyCheck("GET", "/admin/login/?next=%2Fadmin%2F", "127.0.0.60", ""), "GET", "127.0.0.60"},
		{"edge, IPv6 client", envoyCheck("GET", "/admin/", "2001:db8::1", ""), "GET", "2001:db8::1"},
		{"edge, IPv4-mapped client", envoyCheck("GET", "/admin/", "::ffff:127.0.0.10", ""), "GET", "127.0.0.10"},
		// Behind the balancer (xff_num_trusted_hops: 1): the balancer
		// appended the client, Envoy appended the balancer.
		{"behind the balancer", envoyCheck("GET", "/admin/", "127.0.0.10, 127.0.0.66,127.0.0.20", ""), "GET", "127.0.0.66"},
		{"behind the balancer, allowed client", envoyCheck("GET", "/admin/", "127.0.0.66, 127.0.0.10,127.0.0.20", ""), "GET", "127.0.0.10"},
		// The original method, whatever it is; a body only with with_request_body.
		{"POST", envoyCheck("POST", "/admin/login/", "127.0.0.66", ""), "POST", "127.0.0.66"},
		{"POST with_request_body", envoyCheck("POST", "/admin/login/", "127.0.0.10", "username=admin&password=x", "x-envoy-auth-partial-body: false"), "POST", "127.0.0.10"},
		{"PUT", envoyCheck("PUT", "/admin/x", "127.0.0.200", ""), "PUT", "127.0.0.200"},
		{"DELETE", envoyCheck("DELETE", "/admin/x", "127.0.0.10", ""), "DELETE", "127.0.0.10"},
		{"PATCH", envoyCheck("PATCH", "/admin/x", "127.0.0.10", ""), "PATCH", "127.0.0.10"},
		{"OPTIONS", envoyCheck("OPTIONS", "/admin/", "127.0.0.66", ""), "OPTIONS", "127.0.0.66"},
		{"HEAD", envoyCheck("HEAD", "/admin/", "127.0.0.10", ""), "HEAD", "127.0.0.10"},
		// The original path, as the client wrote it (normalize_path off).
		{"dot segments", envoyCheck("GET", "/../decide", "127.0.0.66", ""), "GET", "127.0.0.66"},
		{"encoded path", envoyCheck("GET", "/%61dmin//x;y", "127.0.0.66", ""), "GET", "127.0.0.66"},
		// x-forwarded-for missing from allowed_headers: no client, denied.
		{"x-forwarded-for not allowed", envoyCheck("GET", "/admin/", "", "", "authorization: Basic eDp5"), "GET", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := scrapeMetrics(t, d)
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(conn, tc.req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: tc.method})
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Close {
				t.Errorf("doorman closes the connection; Envoy would open a new one per check")
			}
			judgedAs(t, d, tc.name, tc.client, before, resp.StatusCode, resp.Header, string(body))
		})
	}
}

// TestIngressNginxKeepaliveContract: ingress-nginx with auth-keepalive sends
// the auth request through a Lua subrequest that allows only a 200, so it
// points at /forward-auth. Its auth location sets X-Real-IP and
// X-Forwarded-For to $the_real_ip and passes the client's other headers.
func TestIngressNginxKeepaliveContract(t *testing.T) {
	d := startDoorman(t, proxyProtoEnv())
	for _, tc := range []struct{ realIP, client string }{
		{"127.0.0.10", "127.0.0.10"},
		{"127.0.0.66", "127.0.0.66"},
	} {
		req := "GET /forward-auth HTTP/1.1\r\nHost: doorman.doorman.svc.cluster.local\r\n" +
			"X-Original-URL: https://example.com/admin/\r\nX-Original-Method: GET\r\nX-Sent-From: nginx-ingress-controller\r\n" +
			"X-Real-IP: " + tc.realIP + "\r\nX-Forwarded-For: " + tc.realIP + "\r\nX-Auth-Request-Redirect: /admin/\r\n" +
			"User-Agent: Mozilla/5.0\r\nCookie: sessionid=abc\r\nX-Client-IP: 127.0.0.10\r\nConnection: close\r\n\r\n"
		before := scrapeMetrics(t, d)
		r, err := rawExchange(t, "127.0.0.1", d.DecideAddr, []byte(req))
		if err != nil {
			t.Fatal(err)
		}
		judgedAs(t, d, "ingress-nginx, $the_real_ip "+tc.realIP, tc.client, before, r.status, r.header, r.body)
	}
}

// TestForwardAuthFromUntrustedPeer: a request to /forward-auth or
// /ext-authz/ that does not come from a trusted proxy is judged by its
// peer, whatever it says.
func TestForwardAuthFromUntrustedPeer(t *testing.T) {
	d := startDoorman(t, proxyProtoEnv())
	for _, path := range []string{"/forward-auth", "/ext-authz/admin/"} {
		for _, src := range []string{"127.0.0.66", "127.0.0.200", "127.0.0.10"} {
			req := "GET " + path + " HTTP/1.1\r\nHost: d\r\nX-Forwarded-For: 127.0.0.10\r\nX-Real-IP: 127.0.0.10\r\n\r\n"
			before := scrapeMetrics(t, d)
			r, err := rawExchange(t, src, d.DecideAddr, []byte(req))
			if err != nil {
				t.Fatal(err)
			}
			judgedAs(t, d, path+" from "+src, src, before, r.status, r.header, r.body)
		}
	}
}
