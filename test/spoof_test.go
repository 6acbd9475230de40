package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Client-address spoofing. Every trick a client can play with the headers
// that name a client address is sent as raw bytes (so malformed requests
// reach the server unchanged):
//   - through a real nginx running nginx/site.conf.example, from allowlisted
//     and non-allowlisted sources: the verdict is always the real source's;
//   - straight to doorman's decision port, from a trusted peer (the header
//     is read by the contract's rules) and from untrusted peers (the header is
//     ignored and the peer is judged).

// rawResponse is an answer read off a raw connection.
type rawResponse struct {
	status int
	header http.Header
	body   string
}

// rawExchange connects to addr from the source address src (a 127.0.0.x),
// writes req as is and reads one response.
func rawExchange(t *testing.T, src, addr string, req []byte) (rawResponse, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return rawResponse{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// Write while reading: a server may answer and close before it has read
	// an oversized request.
	werr := make(chan error, 1)
	go func() { _, err := c.Write(req); werr <- err }()
	r, err := readRawResponse(bufio.NewReader(c))
	if err != nil {
		if we := <-werr; we != nil {
			return r, fmt.Errorf("%w (writing: %v)", err, we)
		}
	}
	return r, err
}

// readRawResponse reads one final response (its body up to 1 MiB) from
// br, skipping 1xx interim responses.
func readRawResponse(br *bufio.Reader) (rawResponse, error) {
	resp, err := http.ReadResponse(br, nil)
	for err == nil && resp.StatusCode < 200 {
		resp, err = http.ReadResponse(br, nil)
	}
	if err != nil {
		return rawResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return rawResponse{}, err
	}
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

// Verdict keywords for what a trick should lead to at a trusted peer.
const (
	reasonOfClaim = "claim" // the header is believed: the claimed address's verdict
	noClientIP    = "no-client-ip"
)

// spoofTrick is one way of naming a client address in a request.
type spoofTrick struct {
	name string
	// head returns the request head: the request line and header lines, each
	// ending in CRLF, without the final empty line. claim is the address the
	// client would like to be judged as.
	head func(claim string) string
	// trusted is the X-Doorman-Reason doorman must give when a trusted peer
	// sends this request: reasonOfClaim or a literal reason.
	trusted string
	// nginx400 marks requests nginx itself refuses as malformed (400), before
	// any auth_request.
	nginx400 bool
	// rejected marks requests doorman's HTTP parser refuses: a 403
	// (no-client-ip) from every peer, trusted or not. Fail closed.
	rejected bool
}

func getHead(lines ...string) string {
	return "GET /admin/ HTTP/1.1\r\nHost: example.com\r\n" + strings.Join(lines, "")
}

func hdr(name, value string) string { return name + ": " + value + "\r\n" }

// mappedHex writes an IPv4 address as ::ffff:XXXX:XXXX.
func mappedHex(ip string) string {
	a := netip.MustParseAddr(ip).As4()
	return fmt.Sprintf("::ffff:%02x%02x:%02x%02x", a[0], a[1], a[2], a[3])
}

var spoofTricks = []spoofTrick{
	{"X-Real-IP", func(c string) string { return getHead(hdr("X-Real-IP", c)) }, reasonOfClaim, false, false},
	{"x-real-ip lower case", func(c string) string { return getHead(hdr("x-real-ip", c)) }, reasonOfClaim, false, false},
	{"X-REAL-IP upper case", func(c string) string { return getHead(hdr("X-REAL-IP", c)) }, reasonOfClaim, false, false},
	{"X-ReAl-iP mixed case", func(c string) string { return getHead(hdr("X-ReAl-iP", c)) }, reasonOfClaim, false, false},
	{"X-Real-IP twice", func(c string) string { return getHead(hdr("X-Real-IP", c), hdr("X-Real-IP", c)) }, noClientIP, false, false},
	{"X-Real-IP twice, names differ in case", func(c string) string { return getHead(hdr("X-Real-IP", c), hdr("x-real-ip", c)) }, noClientIP, false, false},
	{"X-Real-IP twice, loopback first", func(c string) string { return getHead(hdr("X-Real-IP", "127.0.0.1"), hdr("X-Real-IP", c)) }, noClientIP, false, false},
	{"X-Real-IP and X-Forwarded-For", func(c string) string { return getHead(hdr("X-Real-IP", c), hdr("X-Forwarded-For", c)) }, reasonOfClaim, false, false},
	{"X-Forwarded-For only", func(c string) string { return getHead(hdr("X-Forwarded-For", c)) }, noClientIP, false, false},
	{"X-Forwarded-For list", func(c string) string { return getHead(hdr("X-Forwarded-For", c+", 127.0.0.1")) }, noClientIP, false, false},
	{"X-Forwarded-For repeated", func(c string) string { return getHead(hdr("X-Forwarded-For", c), hdr("X-Forwarded-For", c)) }, noClientIP, false, false},
	{"Forwarded for=", func(c string) string { return getHead(hdr("Forwarded", "for="+c)) }, noClientIP, false, false},
	{"Forwarded quoted mapped IPv6", func(c string) string { return getHead(hdr("Forwarded", `for="[::ffff:`+c+`]"`)) }, noClientIP, false, false},
	{"Forwarded list", func(c string) string { return getHead(hdr("Forwarded", "for="+c+";proto=https, for=127.0.0.1")) }, noClientIP, false, false},
	{"other client-IP headers", func(c string) string {
		return getHead(hdr("True-Client-IP", c), hdr("CF-Connecting-IP", c), hdr("X-Client-IP", c),
			hdr("X-Cluster-Client-IP", c), hdr("Client-IP", c), hdr("X-Originating-IP", c))
	}, noClientIP, false, false},
	{"X_Real_IP underscores", func(c string) string { return getHead(hdr("X_Real_IP", c)) }, noClientIP, false, false},
	{"IPv4-mapped IPv6", func(c string) string { return getHead(hdr("X-Real-IP", "::ffff:"+c)) }, reasonOfClaim, false, false},
	{"IPv4-mapped IPv6 in hex", func(c string) string { return getHead(hdr("X-Real-IP", mappedHex(c))) }, reasonOfClaim, false, false},
	{"IPv4-mapped IPv6 with zone", func(c string) string { return getHead(hdr("X-Real-IP", "::ffff:"+c+"%eth0")) }, reasonOfClaim, false, false},
	// ::a.b.c.d (IPv4-compatible) is an IPv6 address of its own, outside the allow list.
	{"IPv4-compatible IPv6", func(c string) string { return getHead(hdr("X-Real-IP", "::"+c)) }, "not-allowlisted", false, false},
	{"zoned link-local IPv6", func(string) string { return getHead(hdr("X-Real-IP", "fe80::1%eth0")) }, "not-allowlisted", false, false},
	{"IPv6 loopback", func(string) string { return getHead(hdr("X-Real-IP", "::1")) }, "not-allowlisted", false, false},
	{"spaces around the value", func(c string) string { return getHead(hdr("X-Real-IP", "   "+c+"   ")) }, reasonOfClaim, false, false},
	{"tabs around the value", func(c string) string { return getHead(hdr("X-Real-IP", "\t"+c+"\t")) }, reasonOfClaim, false, false},
	{"two addresses, comma", func(c string) string { return getHead(hdr("X-Real-IP", c+", "+c)) }, noClientIP, false, false},
	{"leading comma", func(c string) string { return getHead(hdr("X-Real-IP", ","+c)) }, noClientIP, false, false},
	{"trailing comma", func(c string) string { return getHead(hdr("X-Real-IP", c+",")) }, noClientIP, false, false},
	{"address with port", func(c string) string { return getHead(hdr("X-Real-IP", c+":443")) }, noClientIP, false, false},
	{"bracketed mapped address with port", func(c string) string { return getHead(hdr("X-Real-IP", "[::ffff:"+c+"]:443")) }, noClientIP, false, false},
	{"leading zeros", func(c string) string {
		a := netip.MustParseAddr(c).As4()
		return getHead(hdr("X-Real-IP", fmt.Sprintf("%03d.%03d.%03d.%03d", a[0], a[1], a[2], a[3])))
	}, noClientIP, false, false},
	{"integer form", func(c string) string {
		a := netip.MustParseAddr(c).As4()
		return getHead(hdr("X-Real-IP", fmt.Sprint(uint32(a[0])<<24|uint32(a[1])<<16|uint32(a[2])<<8|uint32(a[3]))))
	}, noClientIP, false, false},
	{"short form", func(c string) string {
		a := netip.MustParseAddr(c).As4()
		return getHead(hdr("X-Real-IP", fmt.Sprintf("%d.%d", a[0], a[3])))
	}, noClientIP, false, false},
	{"hex octet", func(c string) string { return getHead(hdr("X-Real-IP", "0x7f"+strings.TrimPrefix(c, "127"))) }, noClientIP, false, false},
	{"full-width digits", func(string) string { return getHead(hdr("X-Real-IP", "１２７.０.０.１０")) }, noClientIP, false, false},
	{"percent-encoded dots", func(c string) string { return getHead(hdr("X-Real-IP", strings.ReplaceAll(c, ".", "%2e"))) }, noClientIP, false, false},
	{"empty value", func(string) string { return getHead("X-Real-IP:\r\n") }, noClientIP, false, false},
	{"overlong value, 4 KiB", func(c string) string { return getHead(hdr("X-Real-IP", strings.Repeat(c+",", 4096/len(c)))) }, noClientIP, false, false},
	{"overlong value, 7 KiB of zeros then the address", func(c string) string {
		return getHead(hdr("X-Real-IP", strings.Repeat("0", 7<<10)+c))
	}, noClientIP, false, false},
	// Longer than nginx's large_client_header_buffers (8k) and doorman's 8 KiB read buffer.
	{"overlong value, 64 KiB", func(c string) string { return getHead(hdr("X-Real-IP", strings.Repeat(c+",", 64<<10/len(c)))) }, noClientIP, true, true},
	{"invalid UTF-8 before the address", func(c string) string { return getHead(hdr("X-Real-IP", "\xff\xfe"+c)) }, noClientIP, false, false},
	{"invalid UTF-8 after the address", func(c string) string { return getHead(hdr("X-Real-IP", c+"\xc3\x28")) }, noClientIP, false, false},
	{"overlong UTF-8 dot", func(c string) string { return getHead(hdr("X-Real-IP", strings.ReplaceAll(c, ".", "\xc0\xae"))) }, noClientIP, false, false},
	{"NUL after the address", func(c string) string { return getHead(hdr("X-Real-IP", c+"\x00")) }, noClientIP, true, true},
	{"obs-fold continuation", func(c string) string { return getHead("X-Real-IP: 127.0.0.1\r\n " + c + "\r\n") }, noClientIP, true, false},
	{"space before the colon", func(c string) string { return getHead("X-Real-IP : " + c + "\r\n") }, noClientIP, true, true},
	{"HTTP/1.0", func(c string) string {
		return "GET /admin/ HTTP/1.0\r\nHost: example.com\r\n" + hdr("X-Real-IP", c) + hdr("X-Forwarded-For", c)
	}, reasonOfClaim, false, false},
	{"absolute-form request target", func(c string) string {
		return "GET http://" + c + "/admin/ HTTP/1.1\r\nHost: " + c + "\r\n" + hdr("X-Real-IP", c)
	}, reasonOfClaim, false, false},
	{"X-Original-URI and X-Original-Method", func(c string) string {
		return getHead(hdr("X-Original-URI", "/public"), hdr("X-Original-Method", "OPTIONS"), hdr("X-Real-IP", c))
	}, reasonOfClaim, false, false},
}

// spoofEnv: 127.0.0.0/25 allowed, 127.0.0.66 denylisted, 127.0.0.60 banned
// (by the test), 127.0.0.200 outside the allow list.
var spoofEnv = map[string]string{
	"DOORMAN_ALLOW":     "127.0.0.0/25",
	"DOORMAN_DENY":      "127.0.0.66",
	"DOORMAN_API_TOKEN": "spoof-token",
}

// spoofSource is a real client address, its verdict, and an address with
// the opposite verdict that it claims to be.
type spoofSource struct {
	src, reason, claim string
}

var spoofSources = []spoofSource{
	{"127.0.0.10", "allowed", "127.0.0.66"},
	{"127.0.0.11", "allowed", "127.0.0.200"},
	{"127.0.0.200", "not-allowlisted", "127.0.0.10"},
	{"127.0.0.66", "denylisted", "127.0.0.10"},
	{"127.0.0.60", "banned", "127.0.0.11"},
}

func TestSpoofThroughNginx(t *testing.T) {
	if len(spoofTricks) < 30 {
		t.Fatalf("%d tricks, want at least 30", len(spoofTricks))
	}
	s := startSite(t, spoofEnv)
	if code, body := s.d.API(t, "POST", "/v1/bans", map[string]string{"ip": "127.0.0.60", "duration": "1h"}); code != 201 {
		t.Fatalf("manual ban: status %d, body %s", code, body)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", s.n.Port)
	requests, bypasses := 0, 0
	for _, tr := range spoofTricks {
		t.Run(tr.name, func(t *testing.T) {
			for _, src := range spoofSources {
				req := []byte(tr.head(src.claim) + "\r\n")
				r, err := rawExchange(t, src.src, addr, req)
				requests++
				if err != nil {
					t.Errorf("from %s claiming %s: %v", src.src, src.claim, err)
					continue
				}
				if strings.Contains(r.body, protectedBody) && src.reason != "allowed" {
					bypasses++
					t.Errorf("BYPASS: %s (%s) claiming %s got the protected page", src.src, src.reason, src.claim)
					continue
				}
				switch {
				case tr.nginx400:
					if r.status != 400 {
						t.Errorf("from %s claiming %s: status %d, want nginx's 400", src.src, src.claim, r.status)
					}
				case src.reason == "allowed":
					wantRaw(t, src.src, r, 200, protectedBody)
				default:
					wantRaw(t, src.src, r, 403, page403)
				}
			}
		})
	}
	t.Logf("%d tricks x %d sources = %d requests through nginx, %d bypasses", len(spoofTricks), len(spoofSources), requests, bypasses)

	// Every decision doorman made was about the real source: count them by
	// reason in the metrics.
	checkSpoofDecisions(t, s.d, len(spoofTricks))
}

func wantRaw(t *testing.T, src string, r rawResponse, status int, body string) {
	t.Helper()
	if r.status != status || !strings.Contains(r.body, body) {
		t.Errorf("from %s: status %d body %.120q, want %d with %q", src, r.status, r.body, status, body)
	}
}

// checkSpoofDecisions checks doorman's decision counters: each source was
// judged exactly once per non-malformed trick, as itself, and never with
// no-client-ip (nginx always sends exactly one X-Real-IP).
func checkSpoofDecisions(t *testing.T, d *Doorman, tricks int) {
	t.Helper()
	m := scrapeMetrics(t, d)
	wellFormed := 0
	for _, tr := range spoofTricks {
		if !tr.nginx400 {
			wellFormed++
		}
	}
	want := map[string]float64{}
	for _, s := range spoofSources {
		want[s.reason] += float64(wellFormed)
	}
	for _, reason := range []string{"allowed", "not-allowlisted", "denylisted", "banned", "no-client-ip"} {
		verdict := "deny"
		if reason == "allowed" {
			verdict = "allow"
		}
		got := m[`doorman_decisions_total{verdict="`+verdict+`",reason="`+reason+`"}`]
		if got != want[reason] {
			t.Errorf("decisions with reason %s: %v, want %v", reason, got, want[reason])
		}
	}
}

// Path tricks: ways of spelling /admin/ that nginx's location matching and
// the app might read differently. A denied source must never get the
// protected page, however the path is written.
func TestSpoofPathsThroughNginx(t *testing.T) {
	s := startSite(t, spoofEnv)
	addr := fmt.Sprintf("127.0.0.1:%d", s.n.Port)
	paths := []string{"/admin/", "/ADMIN/", "/admin", "//admin/", "/%61dmin/", "/admin%2F", "/admin/%2e%2e/admin/",
		"/./admin/", "/x/../admin/", "/admin/.", "/admin;/", "/admin/?x=/", "/admin/#x", "/admin\\", "/%2fadmin/", "/admin/%00"}
	for _, p := range paths {
		for _, src := range []string{"127.0.0.200", "127.0.0.66"} {
			r, err := rawExchange(t, src, addr, []byte("GET "+p+" HTTP/1.1\r\nHost: example.com\r\n\r\n"))
			if err != nil {
				t.Errorf("GET %s from %s: %v", p, src, err)
				continue
			}
			if strings.Contains(r.body, protectedBody) {
				t.Errorf("BYPASS: GET %s from denied %s: status %d, got the protected page", p, src, r.status)
			}
		}
	}
}

// The same tricks straight to the decision port. Only 127.0.0.1 is a
// trusted proxy here, so 127.0.0.x (x ≠ 1) are untrusted peers.
func TestSpoofDecisionPort(t *testing.T) {
	env := map[string]string{"DOORMAN_TRUSTED_PROXIES": "127.0.0.1/32"}
	for k, v := range spoofEnv {
		env[k] = v
	}
	d := startDoorman(t, env)
	if code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": "127.0.0.60", "duration": "1h"}); code != 201 {
		t.Fatalf("manual ban: status %d, body %s", code, body)
	}
	reasonOf := map[string]string{}
	for _, s := range spoofSources {
		reasonOf[s.src] = s.reason
	}
	requests := 0
	for _, tr := range spoofTricks {
		t.Run(tr.name, func(t *testing.T) {
			// A trusted peer: the header is read by the contract's rules.
			for _, claim := range []string{"127.0.0.10", "127.0.0.66", "127.0.0.200"} {
				want := tr.trusted
				if want == reasonOfClaim {
					want = reasonOf[claim]
					if claim == "127.0.0.10" {
						want = "allowed"
					}
				}
				requests++
				checkDecision(t, "trusted 127.0.0.1 claiming "+claim, "127.0.0.1", d.DecideAddr, tr.head(claim), want)
			}
			// Untrusted peers: the header is ignored, the peer is judged.
			for _, src := range spoofSources {
				want := src.reason
				if tr.rejected {
					want = noClientIP
				}
				requests++
				checkDecision(t, "untrusted "+src.src+" claiming "+src.claim, src.src, d.DecideAddr, tr.head(src.claim), want)
			}
		})
	}
	t.Logf("%d tricks, %d requests to the decision port", len(spoofTricks), requests)
}

// checkDecision sends head to the decision port from src and checks the
// answer: 204 or 403 by the reason, the verdict header, an empty body.
func checkDecision(t *testing.T, name, src, addr, head, reason string) {
	t.Helper()
	r, err := rawExchange(t, src, addr, []byte(head+"\r\n"))
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return
	}
	status, verdict := 403, "deny"
	if reason == "allowed" {
		status, verdict = 204, "allow"
	}
	got := r.header.Get("X-Doorman-Reason")
	if r.status != status || got != reason || r.header.Get("X-Doorman-Verdict") != verdict || r.body != "" {
		t.Errorf("%s: status %d reason %q verdict %q body %q, want %d %q %q and no body",
			name, r.status, got, r.header.Get("X-Doorman-Verdict"), r.body, status, reason, verdict)
	}
}
