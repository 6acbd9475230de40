package test

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/server"
	"github.com/doorman/doorman/internal/testproc"
)

// Abuse of doorman's two listeners: oversized requests, slow and idle
// clients, bad input on every API endpoint, and the API token.

// decideHead is a well-formed decision request as nginx sends it.
func decideHead(ip string) string {
	return "GET /decide HTTP/1.1\r\nHost: doorman\r\nX-Real-IP: " + ip + "\r\n"
}

func TestAbuseOversizedRequests(t *testing.T) {
	d := startDoorman(t, map[string]string{"DOORMAN_API_TOKEN": "abuse-token", "DOORMAN_STATE_FILE": ""})
	auth := "Authorization: Bearer abuse-token\r\n"
	pad := func(n int) string { return "X-Pad: " + strings.Repeat("a", n) + "\r\n" }
	many := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "X-H%d: v\r\n", i)
		}
		return b.String()
	}

	// The decision port answers only 204 or 403: a request it cannot read
	// is a 403 (fail closed), never a 4xx/5xx that nginx would turn into 500.
	for _, tc := range []struct{ name, head, reason string }{
		{"7 KiB header", decideHead("127.0.0.10") + pad(7<<10), "allowed"},
		{"16 KiB header", decideHead("127.0.0.10") + pad(16<<10), "no-client-ip"},
		{"1 MiB header", decideHead("127.0.0.10") + pad(1<<20), "no-client-ip"},
		{"2000 small headers", decideHead("127.0.0.10") + many(2000), "no-client-ip"},
		{"8 KiB request line", "GET /" + strings.Repeat("a", 8<<10) + " HTTP/1.1\r\nHost: d\r\nX-Real-IP: 127.0.0.10\r\n", "no-client-ip"},
		{"body over the limit", decideHead("127.0.0.10") + "Content-Length: 100000\r\n", "no-client-ip"},
	} {
		body := ""
		if strings.Contains(tc.head, "Content-Length: 100000") {
			body = strings.Repeat("b", 100000)
		}
		r, err := rawExchange(t, "", d.DecideAddr, []byte(tc.head+"\r\n"+body))
		if err != nil && len(tc.head)+len(body) > 64<<10 && errors.Is(err, syscall.ECONNRESET) {
			// doorman answered and closed with the rest unread: the kernel's
			// reset can overtake the answer. nginx never sends such requests.
			continue
		} else if err != nil {
			t.Errorf("decide, %s: %v", tc.name, err)
			continue
		}
		want := 403
		if tc.reason == "allowed" {
			want = 204
		}
		if r.status != want || r.header.Get("X-Doorman-Reason") != tc.reason || r.body != "" {
			t.Errorf("decide, %s: status %d reason %q body %.80q, want %d %q and no body",
				tc.name, r.status, r.header.Get("X-Doorman-Reason"), r.body, want, tc.reason)
		}
	}

	// The API answers 413 for a body over 4 KiB and 431 for oversized
	// headers, with a JSON error.
	big := `{"ip":"203.0.113.1","username":"` + strings.Repeat("u", 5000) + `"}`
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"16 KiB header", "GET /v1/bans HTTP/1.1\r\nHost: d\r\n" + auth + pad(16<<10) + "\r\n", 431},
		{"2000 small headers", "GET /v1/bans HTTP/1.1\r\nHost: d\r\n" + auth + many(2000) + "\r\n", 431},
		{"body over 4 KiB", "POST /v1/failures HTTP/1.1\r\nHost: d\r\n" + auth + "Content-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big, 413},
		{"1 MiB body", "POST /v1/failures HTTP/1.1\r\nHost: d\r\n" + auth + "Content-Length: 1048576\r\n\r\n" + strings.Repeat("{", 1<<20), 413},
		{"Content-Length 2^62 and no body", "POST /v1/failures HTTP/1.1\r\nHost: d\r\n" + auth + "Content-Length: 4611686018427387904\r\n\r\n", 413},
		{"chunked body over 4 KiB", "POST /v1/failures HTTP/1.1\r\nHost: d\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(big), big), 413},
		{"Expect 100-continue, 1 GiB", "POST /v1/failures HTTP/1.1\r\nHost: d\r\n" + auth + "Expect: 100-continue\r\nContent-Length: 1073741824\r\n\r\n", 413},
	} {
		r, err := rawExchange(t, "", d.APIAddr, []byte(tc.req))
		if err != nil && len(tc.req) > 64<<10 && errors.Is(err, syscall.ECONNRESET) {
			continue // as above
		} else if err != nil {
			t.Errorf("api, %s: %v", tc.name, err)
			continue
		}
		if r.status != tc.status {
			t.Errorf("api, %s: status %d, want %d; body %.200q", tc.name, r.status, tc.status, r.body)
		}
		wantJSONError(t, "api, "+tc.name, r)
	}
	if code, body := d.API(t, "GET", "/healthz", nil); code != 200 {
		t.Fatalf("after oversized requests: /healthz %d %s", code, body)
	}
}

// wantJSONError checks an API error answer: JSON {"error": "..."}.
func wantJSONError(t *testing.T, name string, r rawResponse) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", name, ct)
	}
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error == nil || *e.Error == "" {
		t.Errorf("%s: body %.200q is not a JSON error", name, r.body)
	}
}

// serverLimits returns the read timeout and idle timeout the listeners are
// built with: the API server's fasthttp timeouts and the decision
// listener's watch limits (server.DecideLimits).
func serverLimits(t *testing.T) (read, idle time.Duration) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	as := server.NewAPIServer(&server.API{}, log)
	dl := server.DecideLimits
	if dl.Read <= 0 || dl.Idle <= 0 || dl.Write <= 0 || as.ReadTimeout <= 0 || as.IdleTimeout <= 0 {
		t.Fatalf("listeners without timeouts: decide %+v, api read %v idle %v", dl, as.ReadTimeout, as.IdleTimeout)
	}
	return max(dl.Read+server.WatchTick, as.ReadTimeout), min(dl.Idle, as.IdleTimeout)
}

// nginx's upstream keepalive_timeout must be shorter than doorman's idle
// timeout, so nginx, not doorman, closes idle connections: a connection
// closed by doorman just as nginx reuses it costs a request.
func TestAbuseIdleTimeoutAboveNginx(t *testing.T) {
	_, idle := serverLimits(t)
	conf, err := os.ReadFile(filepath.Join(repoRoot(t), "nginx", "doorman-upstream.conf"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*keepalive_timeout\s+(\d+)s;`).FindSubmatch(conf)
	if m == nil {
		t.Fatal("doorman-upstream.conf sets no keepalive_timeout (nginx's default is 60s)")
	}
	n, _ := strconv.Atoi(string(m[1]))
	if nginx := time.Duration(n) * time.Second; nginx >= idle {
		t.Errorf("nginx keepalive_timeout %v, doorman idle timeout %v: want nginx's shorter", nginx, idle)
	}
}

// slowConn is a connection held open by an abusive client; closedAfter is
// how long after opening the server closed it (0: still open).
type slowConn struct {
	c           net.Conn
	opened      time.Time
	closedAfter time.Duration
	gotBytes    int
}

// watch reads until the server closes the connection.
func (s *slowConn) watch(wg *sync.WaitGroup) {
	defer wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := s.c.Read(buf)
		s.gotBytes += n
		if err != nil {
			s.closedAfter = time.Since(s.opened)
			return
		}
	}
}

func TestAbuseSlowAndIdleClients(t *testing.T) {
	if testing.Short() {
		t.Skip("holds connections for the server's read timeout")
	}
	readTimeout, _ := serverLimits(t)
	d := startDoorman(t, map[string]string{"DOORMAN_API_TOKEN": "abuse-token", "DOORMAN_STATE_FILE": "",
		"DOORMAN_ALLOW": "127.0.0.0/25"})
	const perKind = 100 // connections of each kind on each listener
	var conns []*slowConn
	var watchers sync.WaitGroup
	stop := make(chan struct{})
	var tricklers sync.WaitGroup
	open := func(addr string) *slowConn {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		s := &slowConn{c: c, opened: time.Now()}
		conns = append(conns, s)
		watchers.Add(1)
		go s.watch(&watchers)
		return s
	}
	// trickle sends first at once, then rest one byte every 200 ms.
	trickle := func(s *slowConn, first, rest string) {
		tricklers.Add(1)
		go func() {
			defer tricklers.Done()
			if _, err := io.WriteString(s.c, first); err != nil {
				return
			}
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for i := 0; i < len(rest); i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := s.c.Write([]byte{rest[i]}); err != nil {
					return
				}
			}
		}()
	}
	endless := strings.Repeat("a", 1000) // more bytes than the read timeout lets through
	for _, addr := range []string{d.DecideAddr, d.APIAddr} {
		for range perKind {
			open(addr) // idle: connects, sends nothing
			trickle(open(addr), "GET / HTTP/1.1\r\nHost: d\r\nX-Slow: ", endless)
		}
	}
	for range perKind { // a body that never arrives
		trickle(open(d.APIAddr), "POST /v1/failures HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer abuse-token\r\nContent-Length: 2000\r\n\r\n{", endless)
	}
	t.Cleanup(func() {
		for _, s := range conns {
			s.c.Close()
		}
	})

	// A normal client keeps getting answers while the slow ones are held.
	const deadline = time.Second
	var lat []time.Duration
	errs := 0
	keep, err := net.DialTimeout("tcp", d.DecideAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	keepR := newRawConn(keep)
	end := time.Now().Add(readTimeout + 3*time.Second)
	for i := 0; time.Now().Before(end); i++ {
		start := time.Now()
		var r rawResponse
		var err error
		switch i % 4 {
		case 0: // on nginx's kind of keep-alive connection
			r, err = keepR.exchange([]byte(decideHead("127.0.0.10") + "\r\n"))
			if err == nil && r.status != 204 {
				err = fmt.Errorf("decide on keep-alive: status %d", r.status)
			}
		case 1: // on a new connection
			r, err = rawExchange(t, "", d.DecideAddr, []byte(decideHead("127.0.0.200")+"\r\n"))
			if err == nil && r.status != 403 {
				err = fmt.Errorf("decide: status %d", r.status)
			}
		case 2:
			r, err = rawExchange(t, "", d.APIAddr, []byte("GET /healthz HTTP/1.1\r\nHost: d\r\n\r\n"))
			if err == nil && r.status != 200 {
				err = fmt.Errorf("healthz: status %d", r.status)
			}
		case 3:
			body := fmt.Sprintf(`{"ip":"198.51.100.%d"}`, i%200)
			r, err = rawExchange(t, "", d.APIAddr, []byte("POST /v1/failures HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer abuse-token\r\n"+
				"Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body))
			if err == nil && r.status != 200 {
				err = fmt.Errorf("failure: status %d %s", r.status, r.body)
			}
		}
		el := time.Since(start)
		lat = append(lat, el)
		if err != nil || el > deadline {
			errs++
			if errs <= 5 {
				t.Errorf("normal request %d: %v after %v", i, err, el)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	slices.Sort(lat)
	p99 := lat[len(lat)*99/100]
	t.Logf("normal client: %d requests during the abuse, %d failed or slower than %v; p50 %v, p99 %v, max %v",
		len(lat), errs, deadline, lat[len(lat)/2], p99, lat[len(lat)-1])

	// Every abusive connection was closed by doorman within its read timeout.
	waitDone := make(chan struct{})
	go func() { watchers.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(5 * time.Second):
		open := 0
		for _, s := range conns {
			if s.closedAfter == 0 {
				open++
			}
		}
		t.Fatalf("%d of %d abusive connections still open %v after the read timeout", open, len(conns), 5*time.Second)
	}
	tricklers.Wait()
	var first, last time.Duration
	for i, s := range conns {
		if i == 0 || s.closedAfter < first {
			first = s.closedAfter
		}
		last = max(last, s.closedAfter)
		if s.closedAfter > readTimeout+2*time.Second {
			t.Errorf("connection closed %v after opening, want within the read timeout %v", s.closedAfter, readTimeout)
		}
	}
	t.Logf("%d abusive connections (idle, slow headers, slow body) closed by doorman after %v to %v (read timeout %v)",
		len(conns), first.Round(time.Millisecond), last.Round(time.Millisecond), readTimeout)
	if first < readTimeout/2 {
		t.Errorf("a connection was closed after %v, want the read timeout %v to be what closes them", first, readTimeout)
	}
}

// rawConn sends raw requests on one kept-alive connection.
type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

func newRawConn(c net.Conn) *rawConn { return &rawConn{c: c, br: bufio.NewReader(c)} }

func (k *rawConn) exchange(req []byte) (rawResponse, error) {
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := k.c.Write(req); err != nil {
		return rawResponse{}, err
	}
	return readRawResponse(k.br)
}

// apiCase is one request to the API and the statuses it may get.
type apiCase struct {
	name   string
	req    string // full raw request
	status []int  // allowed statuses; never a 5xx
}

func apiReq(method, path, body string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer abuse-token\r\n", method, path)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	if body != "" || method == "POST" {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	return b.String() + "\r\n" + body
}

func TestAbuseAPIBadInput(t *testing.T) {
	d := startDoorman(t, map[string]string{"DOORMAN_API_TOKEN": "abuse-token"})
	deep := strings.Repeat("[", 2000) + strings.Repeat("]", 2000)
	// White space pads a valid body to the limit (a username over 256 bytes is a 400 of its own).
	exactly4K := `{"ip":"203.0.113.9","username":"admin"` + strings.Repeat(" ", 4096-len(`{"ip":"203.0.113.9","username":"admin"}`)) + `}`
	cases := []apiCase{
		// POST /v1/failures and /v1/successes bodies.
		{"failure: empty body", apiReq("POST", "/v1/failures", ""), []int{400}},
		{"failure: not JSON", apiReq("POST", "/v1/failures", "ip=1.2.3.4"), []int{400}},
		{"failure: truncated JSON", apiReq("POST", "/v1/failures", `{"ip":"1.2.3.4"`), []int{400}},
		{"failure: array", apiReq("POST", "/v1/failures", `["1.2.3.4"]`), []int{400}},
		{"failure: null", apiReq("POST", "/v1/failures", `null`), []int{400}},
		{"failure: string", apiReq("POST", "/v1/failures", `"1.2.3.4"`), []int{400}},
		{"failure: ip a number", apiReq("POST", "/v1/failures", `{"ip":16909060}`), []int{400}},
		{"failure: ip an object", apiReq("POST", "/v1/failures", `{"ip":{"v":"1.2.3.4"}}`), []int{400}},
		{"failure: ip null", apiReq("POST", "/v1/failures", `{"ip":null}`), []int{400}},
		{"failure: ip missing", apiReq("POST", "/v1/failures", `{"username":"admin"}`), []int{400}},
		{"failure: ip empty", apiReq("POST", "/v1/failures", `{"ip":""}`), []int{400}},
		{"failure: ip garbage", apiReq("POST", "/v1/failures", `{"ip":"not-an-ip"}`), []int{400}},
		{"failure: ip a CIDR", apiReq("POST", "/v1/failures", `{"ip":"10.0.0.0/8"}`), []int{400}},
		{"failure: ip with port", apiReq("POST", "/v1/failures", `{"ip":"1.2.3.4:80"}`), []int{400}},
		{"failure: ip with spaces", apiReq("POST", "/v1/failures", `{"ip":" 1.2.3.4 "}`), []int{400}},
		{"failure: ip invalid UTF-8", apiReq("POST", "/v1/failures", "{\"ip\":\"1.2.3.4\xff\"}"), []int{400}},
		{"failure: ip with NUL escape", apiReq("POST", "/v1/failures", `{"ip":"1.2.3.4\u0000"}`), []int{400}},
		{"failure: 600-byte ip", apiReq("POST", "/v1/failures", `{"ip":"`+strings.Repeat("1", 600)+`"}`), []int{400}},
		{"failure: username a number", apiReq("POST", "/v1/failures", `{"ip":"1.2.3.4","username":7}`), []int{400}},
		{"failure: deeply nested username", apiReq("POST", "/v1/failures", `{"ip":"1.2.3.4","username":`+deep+`}`), []int{400}},
		{"failure: unknown field", apiReq("POST", "/v1/failures", `{"ip":"1.2.3.4","admin":true}`), []int{400}},
		{"failure: data after the object", apiReq("POST", "/v1/failures", `{"ip":"1.2.3.4"} {"ip":"5.6.7.8"}`), []int{400}},
		{"failure: body exactly 4 KiB", apiReq("POST", "/v1/failures", exactly4K), []int{200}},
		{"failure: username over 256 bytes", apiReq("POST", "/v1/failures", `{"ip":"203.0.113.9","username":"`+strings.Repeat("u", 257)+`"}`), []int{400}},
		{"failure: zoned mapped ip", apiReq("POST", "/v1/failures", `{"ip":"::ffff:203.0.113.8%eth0"}`), []int{200}},
		{"failure: text/plain", strings.Replace(apiReq("POST", "/v1/failures", `{"ip":"203.0.113.7"}`), "application/json", "text/plain", 1), []int{200, 415}},
		{"success: not JSON", apiReq("POST", "/v1/successes", "{{"), []int{400}},
		{"success: ip garbage", apiReq("POST", "/v1/successes", `{"ip":"x"}`), []int{400}},
		{"success: unknown field", apiReq("POST", "/v1/successes", `{"ip":"1.2.3.4","x":1}`), []int{400}},
		// POST /v1/bans.
		{"ban: ip missing", apiReq("POST", "/v1/bans", `{"duration":"1h"}`), []int{400}},
		{"ban: bad CIDR", apiReq("POST", "/v1/bans", `{"ip":"10.0.0.0/33"}`), []int{400}},
		{"ban: mapped CIDR too short", apiReq("POST", "/v1/bans", `{"ip":"::ffff:0:0/95"}`), []int{400}},
		{"ban: zoned ip", apiReq("POST", "/v1/bans", `{"ip":"fe80::1%eth0"}`), []int{400}},
		{"ban: negative duration", apiReq("POST", "/v1/bans", `{"ip":"203.0.113.20","duration":"-1h"}`), []int{400}},
		{"ban: zero duration", apiReq("POST", "/v1/bans", `{"ip":"203.0.113.20","duration":"0s"}`), []int{400}},
		{"ban: duration in years", apiReq("POST", "/v1/bans", `{"ip":"203.0.113.20","duration":"1y"}`), []int{400}},
		{"ban: duration overflows", apiReq("POST", "/v1/bans", `{"ip":"203.0.113.20","duration":"9999999h"}`), []int{400}},
		{"ban: duration a number", apiReq("POST", "/v1/bans", `{"ip":"203.0.113.20","duration":3600}`), []int{400}},
		{"ban: 300-byte reason", apiReq("POST", "/v1/bans", `{"ip":"203.0.113.20","reason":"`+strings.Repeat("r", 300)+`"}`), []int{400}},
		{"ban: unknown field", apiReq("POST", "/v1/bans", `{"ip":"203.0.113.20","until":"2030-01-01T00:00:00Z"}`), []int{400}},
		// DELETE /v1/bans/{ip}.
		{"unban: no ip", apiReq("DELETE", "/v1/bans/", ""), []int{400, 404, 405}},
		{"unban: garbage", apiReq("DELETE", "/v1/bans/not-an-ip", ""), []int{400}},
		{"unban: bad CIDR", apiReq("DELETE", "/v1/bans/10.0.0.0/99", ""), []int{400}},
		{"unban: encoded slash", apiReq("DELETE", "/v1/bans/10.0.0.0%2F8", ""), []int{400, 404}},
		{"unban: NUL", apiReq("DELETE", "/v1/bans/1.2.3.4%00", ""), []int{400}},
		{"unban: traversal", apiReq("DELETE", "/v1/bans/../../healthz", ""), []int{400, 404, 405}},
		{"unban: no ban", apiReq("DELETE", "/v1/bans/203.0.113.99", ""), []int{404}},
		{"unban: 2 KiB path", apiReq("DELETE", "/v1/bans/"+strings.Repeat("1", 2048), ""), []int{400}},
		// GET /v1/decide.
		{"decide: no ip", apiReq("GET", "/v1/decide", ""), []int{400}},
		{"decide: garbage", apiReq("GET", "/v1/decide?ip=%ff%fe", ""), []int{400}},
		{"decide: ip twice", apiReq("GET", "/v1/decide?ip=1.2.3.4&ip=5.6.7.8", ""), []int{200, 400}},
		{"decide: 6 KiB query", apiReq("GET", "/v1/decide?ip="+strings.Repeat("1", 6<<10), ""), []int{400}},
		// Methods and paths.
		{"GET /v1/failures", apiReq("GET", "/v1/failures", ""), []int{405}},
		{"PUT /v1/bans", apiReq("PUT", "/v1/bans", `{"ip":"1.2.3.4"}`), []int{405}},
		{"PATCH /v1/successes", apiReq("PATCH", "/v1/successes", `{}`), []int{405}},
		{"POST /healthz", apiReq("POST", "/healthz", `{}`), []int{405}},
		{"DELETE /metrics", apiReq("DELETE", "/metrics", ""), []int{405}},
		{"made-up method", apiReq("BREW", "/v1/bans", ""), []int{405}},
		{"unknown /v1 path", apiReq("GET", "/v1/nothing", ""), []int{404}},
		{"/v1 without slash", apiReq("GET", "/v1", ""), []int{404}},
		{"root", apiReq("GET", "/", ""), []int{404}},
		{"/v2/bans", apiReq("GET", "/v2/bans", ""), []int{404}},
		{"percent-encoded path", apiReq("GET", "/v1/%62ans", ""), []int{200, 404}},
		{"absolute-form target", apiReq("GET", "http://doorman/v1/nothing", ""), []int{404}},
		{"OPTIONS *", apiReq("OPTIONS", "*", ""), []int{400, 404, 405}},
		// Malformed HTTP.
		{"garbage request line", "GARBAGE\r\n\r\n", []int{400}},
		{"no HTTP version", "GET /healthz\r\n\r\n", []int{400, 200}},
		{"HTTP/2.0 version", "GET /v1/bans HTTP/2.0\r\nHost: d\r\n\r\n", []int{400, 401, 505}},
		{"negative Content-Length", "POST /v1/failures HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer abuse-token\r\nContent-Length: -1\r\n\r\n", []int{400}},
		{"two Content-Lengths", "POST /v1/failures HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer abuse-token\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\n{}", []int{400}},
		{"bad chunk size", "POST /v1/failures HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer abuse-token\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", []int{400}},
		{"NUL in a header", "GET /v1/bans HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer abuse-token\r\nX-A: \x00\r\n\r\n", []int{400, 200}},
		{"header without colon", "GET /v1/bans HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer abuse-token\r\nbroken\r\n\r\n", []int{400, 200}},
	}
	for _, tc := range cases {
		r, err := rawExchange(t, "", d.APIAddr, []byte(tc.req))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if r.status >= 500 && r.status != 505 || !slices.Contains(tc.status, r.status) {
			t.Errorf("%s: status %d, want one of %v; body %.200q", tc.name, r.status, tc.status, r.body)
		}
		if r.status >= 400 {
			wantJSONError(t, tc.name, r)
		}
	}
	t.Logf("%d bad-input requests to the API: none answered 5xx", len(cases))

	// Bad input changed nothing: no ban, and the one acknowledged failure
	// per accepted address is all that was counted.
	code, body := d.API(t, "GET", "/v1/bans", nil)
	if code != 200 || strings.TrimSpace(string(body)) != `{"bans":[]}` {
		t.Errorf("bans after bad input: %d %s, want none", code, body)
	}
	m := scrapeMetrics(t, d)
	if got := m["doorman_failures_total"]; got != 3 {
		t.Errorf("doorman_failures_total %v, want 3 (the three accepted failures)", got)
	}
	if log := d.Log(t); strings.Contains(log, "panic") {
		t.Errorf("doorman logged a panic:\n%s", log)
	}
}

// A manual ban's duration is the operator's; whatever it is, a ban that the
// API acknowledged with 201 must be in force.
func TestAbuseLongManualBan(t *testing.T) {
	d := startDoorman(t, map[string]string{"DOORMAN_API_TOKEN": "abuse-token"})
	for _, dur := range []string{"1h", "8760h", "262800h", "2562047h"} {
		ip := "203.0.113.50"
		code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": ip, "duration": dur})
		if code >= 500 {
			t.Errorf("ban for %s: status %d %s", dur, code, body)
			continue
		}
		if code != 201 {
			continue // refusing is fine; acknowledging and not banning is not
		}
		code, body = d.API(t, "GET", "/v1/decide?ip="+ip, nil)
		if code != 200 || !strings.Contains(string(body), `"reason":"banned"`) {
			t.Errorf("ban for %s acknowledged with 201, but GET /v1/decide says %d %s", dur, code, body)
		}
		if r, err := rawExchange(t, "", d.DecideAddr, []byte(decideHead(ip)+"\r\n")); err != nil || r.status != 403 {
			t.Errorf("ban for %s acknowledged with 201, but the decision port says %d (%v)", dur, r.status, err)
		}
		d.API(t, "DELETE", "/v1/bans/"+ip, nil)
	}
}

func randomToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "tok-" + hex.EncodeToString(b)
}

func TestAbuseToken(t *testing.T) {
	token := randomToken(t)
	d := startDoorman(t, map[string]string{"DOORMAN_API_TOKEN": token, "DOORMAN_LOG_LEVEL": "debug"})
	get := func(path string, auth ...string) rawResponse {
		t.Helper()
		req := "GET " + path + " HTTP/1.1\r\nHost: d\r\n"
		for _, a := range auth {
			req += "Authorization: " + a + "\r\n"
		}
		r, err := rawExchange(t, "", d.APIAddr, []byte(req+"\r\n"))
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		auth []string
	}{
		{"no Authorization", nil},
		{"empty", []string{""}},
		{"Bearer and nothing", []string{"Bearer "}},
		{"wrong token", []string{"Bearer wrong"}},
		{"token with a suffix", []string{"Bearer " + token + "x"}},
		{"token prefix", []string{"Bearer " + token[:len(token)-1]}},
		{"token without scheme", []string{token}},
		{"Basic scheme", []string{"Basic " + token}},
		{"two spaces", []string{"Bearer  " + token}},
		{"wrong then right", []string{"Bearer wrong", "Bearer " + token}},
		{"token upper-cased", []string{"Bearer " + strings.ToUpper(token)}},
	} {
		for _, path := range []string{"/v1/bans", "/v1/decide?ip=1.2.3.4"} {
			r := get(path, tc.auth...)
			if r.status != 401 {
				t.Errorf("%s, GET %s: status %d, want 401", tc.name, path, r.status)
			}
			wantJSONError(t, tc.name, r)
			if r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
			}
			if strings.Contains(r.body, token) {
				t.Errorf("%s: the answer holds the token: %q", tc.name, r.body)
			}
		}
	}
	// Token as a query parameter is not a token.
	if r := get("/v1/bans?token=" + token); r.status != 401 {
		t.Errorf("token in the query: status %d, want 401", r.status)
	}
	if r := get("/v1/bans", "Bearer "+token); r.status != 200 {
		t.Errorf("right token: status %d, want 200", r.status)
	}
	for _, p := range []string{"/healthz", "/metrics"} {
		if r := get(p); r.status != 200 {
			t.Errorf("GET %s without token: status %d, want 200", p, r.status)
		}
	}
	// Write-side requests are refused without the token too, and change nothing.
	post := "POST /v1/bans HTTP/1.1\r\nHost: d\r\nContent-Length: 20\r\n\r\n" + `{"ip":"203.0.113.1"}`
	if r, err := rawExchange(t, "", d.APIAddr, []byte(post)); err != nil || r.status != 401 {
		t.Errorf("POST /v1/bans without token: %d %v, want 401", r.status, err)
	}
	if code, body := d.API(t, "GET", "/v1/bans", nil); code != 200 || strings.Contains(string(body), "203.0.113.1") {
		t.Errorf("unauthorized POST banned: %d %s", code, body)
	}

	// The CLI, with the right and a wrong token.
	bin := doormanBinary(t)
	cli := func(tok string, args ...string) (string, int) {
		code, out, err := testproc.RunDoorman(append([]string{bin}, args...), t.TempDir(),
			map[string]string{"DOORMAN_API_ADDR": d.APIAddr, "DOORMAN_API_TOKEN": tok, "DOORMAN_STATE_FILE": ""}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return out, code
	}
	if out, code := cli(token, "ban", "203.0.113.2", "-for", "1h"); code != 0 || strings.Contains(out, token) {
		t.Errorf("doorman ban with the token: exit %d, output %q", code, out)
	}
	wrong := randomToken(t)
	if out, code := cli(wrong, "bans"); code == 0 || strings.Contains(out, wrong) {
		t.Errorf("doorman bans with a wrong token: exit %d, output %q; want a failure that does not print the token", code, out)
	}
	if out, _ := cli(token, "env"); strings.Contains(out, token) {
		t.Errorf("doorman env prints the token")
	}
	// A token with white space is refused without echoing it.
	if out, code := cli("bad token "+token, "bans"); code != 2 || strings.Contains(out, token) || !strings.Contains(out, "DOORMAN_API_TOKEN") {
		t.Errorf("token with a space: exit %d, output %q; want exit 2 naming DOORMAN_API_TOKEN, without the token", code, out)
	}

	// Nothing above put the token in doorman's log, at debug level.
	if code, _ := d.API(t, "POST", "/v1/failures", map[string]string{"ip": "203.0.113.3", "username": "admin"}); code != 200 {
		t.Fatalf("failure: status %d", code)
	}
	d.Stop(t)
	log := d.Log(t)
	if strings.Contains(log, token) || strings.Contains(log, token[4:]) {
		t.Errorf("doorman's log holds the token:\n%s", log)
	}
	if !strings.Contains(log, "msg=ban") {
		t.Errorf("log lacks the ban line; was the log captured?\n%s", log)
	}
}

func TestAbuseRefusePublicAPIWithoutToken(t *testing.T) {
	bin := doormanBinary(t)
	port := strconv.Itoa(freePort(t))
	for _, tc := range []struct {
		addr   string
		refuse bool
	}{
		{"0.0.0.0:" + port, true},
		{"[::]:" + port, true},
		{":" + port, true},
		{"192.0.2.1:" + port, true},
		{"[2001:db8::1]:" + port, true},
		{"example.com:" + port, true},
		{"127.0.0.2:" + port, false},
		{"localhost:" + port, false},
		{"[::ffff:127.0.0.1]:" + port, false},
	} {
		env := map[string]string{"DOORMAN_API_ADDR": tc.addr,
			"DOORMAN_DECIDE_ADDR": "127.0.0.1:" + strconv.Itoa(freePort(t)), "DOORMAN_STATE_FILE": ""}
		if !tc.refuse {
			// A loopback address must pass validation; stop at the first
			// later check instead of serving.
			env["DOORMAN_LOG_FORMAT"] = "yaml"
		}
		code, msg, err := testproc.RunDoorman([]string{bin}, t.TempDir(), env, 10*time.Second)
		if err != nil {
			t.Errorf("DOORMAN_API_ADDR=%s: %v, want a refusal", tc.addr, err)
			continue
		}
		switch {
		case tc.refuse && (code != 2 || !strings.Contains(msg, "DOORMAN_API_ADDR") || !strings.Contains(msg, "DOORMAN_API_TOKEN")):
			t.Errorf("DOORMAN_API_ADDR=%s without a token: exit %d, stderr %q; want exit 2 naming DOORMAN_API_ADDR and DOORMAN_API_TOKEN", tc.addr, code, msg)
		case !tc.refuse && (code != 2 || strings.Contains(msg, "DOORMAN_API_ADDR")):
			t.Errorf("DOORMAN_API_ADDR=%s (loopback) without a token: exit %d, stderr %q; want it accepted", tc.addr, code, msg)
		}
	}
}
