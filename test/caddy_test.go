package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proxies/caddy/Caddyfile served by a real Caddy (Debian's caddy, 2.6) in
// front of the test app, asking doorman's /forward-auth. Caddy connects to
// doorman from 127.0.0.1, the only trusted proxy here; clients connect from
// other 127.0.0.x addresses.

// caddySite is a running Caddy with the shipped Caddyfile, doorman and the app.
type caddySite struct {
	d    *Doorman
	port int
	app  *httptest.Server
	dir  string
}

func (c *caddySite) url(path string) string { return "http://127.0.0.1:" + strconv.Itoa(c.port) + path }

// proxyEnv: 127.0.0.0/25 allowed, 127.0.0.66 denylisted, only 127.0.0.1 (the
// proxy) trusted.
func proxyEnv(extra ...string) map[string]string {
	env := map[string]string{
		"DOORMAN_ALLOW":           "127.0.0.0/25",
		"DOORMAN_DENY":            "127.0.0.66",
		"DOORMAN_MAX_FAILURES":    "3",
		"DOORMAN_API_TOKEN":       "test-token",
		"DOORMAN_TRUSTED_PROXIES": "127.0.0.1/32",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// startCaddySite starts doorman with env, the app, and Caddy running
// proxies/caddy/Caddyfile, adapted only where a test must differ from a real
// host: the site address (any host name, on 127.0.0.1:port), doorman's and
// the app's addresses, no admin endpoint, and authExtra: lines added to the
// forward_auth block (e.g. trusted_proxies).
func startCaddySite(t *testing.T, env map[string]string, authExtra string) *caddySite {
	t.Helper()
	return startCaddySiteApp(t, env, authExtra, nil)
}

// startCaddySiteApp is startCaddySite in front of app (nil: testApp).
func startCaddySiteApp(t *testing.T, env map[string]string, authExtra string, app *httptest.Server) *caddySite {
	t.Helper()
	requireTool(t, "caddy", "caddy")
	if app == nil {
		app = testApp(t)
	}
	d := startDoorman(t, env)
	port, dir := startCaddy(t, d, authExtra, app.Listener.Addr().String())
	return &caddySite{d: d, port: port, app: app, dir: dir}
}

// startCaddy runs Caddy with the adapted proxies/caddy/Caddyfile in front of
// upstream (host:port), asking d; it returns Caddy's port and its directory.
// extra are more pairs of (text of the Caddyfile, replacement).
func startCaddy(t *testing.T, d *Doorman, authExtra, upstream string, extra ...string) (int, string) {
	t.Helper()
	requireTool(t, "caddy", "caddy")
	shipped, err := os.ReadFile(filepath.Join(repoRoot(t), "proxies", "caddy", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin, _ := lookTool("caddy")
	var lastLog string
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		conf := adaptConfig(t, "proxies/caddy/Caddyfile", string(shipped),
			"example.com {", fmt.Sprintf("{\n\tadmin off\n}\n\nhttp://:%d {\n\tbind 127.0.0.1", port),
			"forward_auth @doorman 127.0.0.1:9180 {", "forward_auth @doorman "+d.DecideAddr+" {",
			"uri /forward-auth\n", "uri /forward-auth\n"+authExtra,
			"reverse_proxy 127.0.0.1:8000", "reverse_proxy "+upstream,
		)
		conf = adaptConfig(t, "proxies/caddy/Caddyfile", conf, extra...)
		path := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
		// Caddy keeps its state under $HOME (XDG_DATA_HOME): the test's own.
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		ok, log := startProxy(t, "caddy", cmd, filepath.Join(dir, "caddy.log"), port)
		if ok {
			return port, dir
		}
		lastLog = log
		if !strings.Contains(log, "address already in use") {
			break
		}
	}
	t.Fatalf("caddy did not start:\n%s", lastLog)
	return 0, ""
}

// adaptConfig applies old/new pairs to a shipped configuration file, failing
// when an old string is missing, so a change to the file cannot silently
// bypass the adaptation.
func adaptConfig(t *testing.T, name, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%s no longer contains %q", name, pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// startProxy starts cmd (a proxy listening on 127.0.0.1:port), its output
// to logPath, and waits until the port accepts. It reports false and the log
// when the process exits first; t.Cleanup stops it with SIGTERM and prints
// the log when the test failed.
func startProxy(t *testing.T, name string, cmd *exec.Cmd, logPath string, port int) (bool, string) {
	t.Helper()
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	readLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			return false, readLog()
		default:
		}
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return false, "no connection within 15s\n" + readLog()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		if !stopProcess(cmd, exited, syscall.SIGTERM) {
			t.Errorf("%s did not exit after SIGTERM; killed", name)
		}
		if t.Failed() {
			t.Logf("%s log (last 40 lines):\n%s", name, tail(readLog(), 40))
		}
	})
	return true, ""
}

// proxyResponse is an answer through a proxy.
type proxyResponse struct {
	status int
	header http.Header
	body   string
}

// send sends method url with body from the source address src, with extra
// headers (each pair added, so a name may repeat).
func send(t *testing.T, src, method, url, body string, headers ...string) proxyResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := clientFrom(src).Do(req)
	if err != nil {
		t.Fatalf("%s %s from %s: %v", method, url, src, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s from %s: reading body: %v", method, url, src, err)
	}
	return proxyResponse{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// noDoormanHeaders fails the test when an X-Doorman-* header reached the
// client.
func noDoormanHeaders(t *testing.T, name string, h http.Header) {
	t.Helper()
	for k, v := range h {
		if strings.HasPrefix(strings.ToLower(k), "x-doorman") {
			t.Errorf("%s: %s: %q reached the client", name, k, v)
		}
	}
}

// wantProxied checks an answer through a proxy: the status, the protected
// page exactly when it is wanted, and no X-Doorman-* header.
func wantProxied(t *testing.T, name string, r proxyResponse, status int, protected bool) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d, want %d; body %.200q", name, r.status, status, r.body)
	}
	if got := strings.Contains(r.body, protectedBody); got != protected {
		t.Errorf("%s: protected page served: %v, want %v; status %d body %.200q", name, got, protected, r.status, r.body)
	}
	noDoormanHeaders(t, name, r.header)
}

// proxyContract checks, through a proxy in front of doorman (environment
// proxyEnv) and the app, what every shipped proxy configuration must do:
// the lists decide /admin/, any body is fine, cookies do not reach doorman,
// failures ban from the next request with Retry-After, and unprotected paths
// stay open.
func proxyContract(t *testing.T, d *Doorman, url func(string) string) {
	t.Helper()
	admin := url("/admin/")
	wantProxied(t, "allowlisted", send(t, "127.0.0.10", "GET", admin, ""), 200, true)
	wantProxied(t, "outside DOORMAN_ALLOW", send(t, "127.0.0.200", "GET", admin, ""), 403, false)
	wantProxied(t, "denylisted", send(t, "127.0.0.66", "GET", admin, ""), 403, false)
	wantProxied(t, "unprotected path, outside DOORMAN_ALLOW", send(t, "127.0.0.200", "GET", url("/"), ""), 200, false)

	// Any method; the request's body is not sent to doorman.
	big := strings.Repeat("field=value&", 10_000)
	wantProxied(t, "allowlisted POST with a 120 KB body", send(t, "127.0.0.10", "POST", admin, big,
		"Content-Type", "application/x-www-form-urlencoded"), 200, true)
	wantProxied(t, "denylisted POST with a 120 KB body", send(t, "127.0.0.66", "POST", admin, big), 403, false)
	// Cookies are not sent to doorman: a head over its 8 KiB read buffer
	// still passes.
	wantProxied(t, "allowlisted with 12 KB of cookies", send(t, "127.0.0.10", "GET", admin, "",
		"Cookie", "a="+strings.Repeat("x", 6000), "Cookie", "b="+strings.Repeat("y", 6000)), 200, true)

	// Failures reported to the webhook ban the address from the next request.
	for i := 0; i < 3; i++ {
		if code, body := d.API(t, "POST", "/v1/failures", map[string]string{"ip": "127.0.0.11"}); code != 200 {
			t.Fatalf("failure %d: status %d body %s", i, code, body)
		}
	}
	r := send(t, "127.0.0.11", "GET", admin, "")
	wantProxied(t, "banned", r, 403, false)
	if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 3000 || n > 3600 {
		t.Errorf("banned: Retry-After %q, want about 3600", r.header.Get("Retry-After"))
	}
	if r := send(t, "127.0.0.66", "GET", admin, ""); r.header.Get("Retry-After") != "" {
		t.Errorf("denylisted: Retry-After %q, want none", r.header.Get("Retry-After"))
	}
	wantProxied(t, "banned, unprotected path", send(t, "127.0.0.11", "GET", url("/"), ""), 200, false)
}

func TestCaddyAllowDenyBan(t *testing.T) {
	s := startCaddySite(t, proxyEnv(), "")
	proxyContract(t, s.d, s.url)
	admin := s.url("/admin/")
	wantProxied(t, "allowlisted HEAD", send(t, "127.0.0.10", "HEAD", admin, ""), 200, false)
	wantProxied(t, "allowlisted DELETE", send(t, "127.0.0.10", "DELETE", admin, ""), 200, true)
	// Credentials are not sent to doorman either.
	wantProxied(t, "allowlisted with 12 KB of cookies and credentials", send(t, "127.0.0.10", "GET", admin, "",
		"Cookie", "a="+strings.Repeat("x", 6000), "Cookie", "b="+strings.Repeat("y", 6000), "Authorization", "Basic "+strings.Repeat("z", 3000)), 200, true)
}

// TestCaddyAppKeepsCredentials: the Caddyfile keeps cookies and
// credentials from doorman, not from the app.
func TestCaddyAppKeepsCredentials(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s cookie=%q authorization=%q", protectedBody, r.Header.Get("Cookie"), r.Header.Get("Authorization"))
	}))
	t.Cleanup(app.Close)
	s := startCaddySiteApp(t, proxyEnv(), "", app)
	r := send(t, "127.0.0.10", "GET", s.url("/admin/"), "", "Cookie", "sessionid=abc", "Authorization", "Basic eDp5")
	wantProxied(t, "allowlisted with credentials", r, 200, true)
	if want := `cookie="sessionid=abc" authorization="Basic eDp5"`; !strings.Contains(r.body, want) {
		t.Errorf("the app got %q, want %s", r.body, want)
	}
}

// forwardTricks are the client-address tricks aimed at X-Forwarded-For, on
// top of spoofTricks (spoof_test.go).
var forwardTricks = []spoofTrick{
	{"X-Forwarded-For with a trusted hop after the claim", func(c string) string {
		return getHead(hdr("X-Forwarded-For", c+", 127.0.0.1"))
	}, noClientIP, false, false},
	{"X-Forwarded-For lower case, twice", func(c string) string {
		return getHead(hdr("x-forwarded-for", c), hdr("x-forwarded-for", "127.0.0.1"))
	}, noClientIP, false, false},
	{"X-Forwarded-For and X-Real-IP both claiming", func(c string) string {
		return getHead(hdr("X-Forwarded-For", c), hdr("X-Real-IP", c), hdr("Forwarded", "for="+c))
	}, noClientIP, false, false},
	{"X_Forwarded_For underscores", func(c string) string { return getHead(hdr("X_Forwarded_For", c)) }, noClientIP, false, false},
	{"X-Forwarded-For no spaces", func(c string) string { return getHead(hdr("X-Forwarded-For", "127.0.0.1,"+c+",127.0.0.1")) }, noClientIP, false, false},
	{"X-Forwarded-For mapped IPv6", func(c string) string { return getHead(hdr("X-Forwarded-For", "::ffff:"+c)) }, noClientIP, false, false},
	{"X-Original-Forwarded-For and X-Envoy-External-Address", func(c string) string {
		return getHead(hdr("X-Original-Forwarded-For", c), hdr("X-Envoy-External-Address", c), hdr("X-Forwarded-Client-IP", c))
	}, noClientIP, false, false},
}

// spoofThroughProxy sends every trick from every source through a proxy at
// addr: a source outside the allow list never gets the protected page and is
// answered 403 (or refused as malformed), an allowed one gets the page unless
// the proxy or doorman refuses the request as unreadable (never 200 without
// it), and no answer carries X-Doorman-*.
func spoofThroughProxy(t *testing.T, addr string) {
	t.Helper()
	tricks := append(append([]spoofTrick(nil), spoofTricks...), forwardTricks...)
	requests, bypasses, refused := 0, 0, 0
	for _, tr := range tricks {
		t.Run(tr.name, func(t *testing.T) {
			for _, src := range spoofSources {
				r, err := rawExchange(t, src.src, addr, []byte(tr.head(src.claim)+"\r\n"))
				requests++
				if err != nil {
					t.Errorf("from %s claiming %s: %v", src.src, src.claim, err)
					continue
				}
				name := fmt.Sprintf("from %s (%s) claiming %s", src.src, src.reason, src.claim)
				noDoormanHeaders(t, name, r.header)
				served := strings.Contains(r.body, protectedBody)
				switch {
				case served && src.reason != "allowed":
					bypasses++
					t.Errorf("BYPASS: %s got the protected page (status %d)", name, r.status)
				case served && r.status != 200:
					t.Errorf("%s: the protected page with status %d", name, r.status)
				case !served && src.reason != "allowed" && r.status != 403 && r.status != 400 && r.status != 431 &&
					!(tr.rejected && r.status == 502):
					// doorman refuses a head it cannot read and closes the
					// connection, at times while the proxy is still writing it:
					// the proxy's 502 fails closed too.
					t.Errorf("%s: status %d body %.120q, want 403 (or 400/431 for a malformed request, 502 for one doorman refuses)",
						name, r.status, r.body)
				case !served && src.reason == "allowed":
					refused++
					if r.status == 200 {
						t.Errorf("%s: 200 without the page: %.120q", name, r.body)
					}
					t.Logf("%s: refused with %d (a request the proxy or doorman cannot read)", name, r.status)
				}
			}
		})
	}
	t.Logf("%d tricks x %d sources = %d requests, %d bypasses, %d allowed-source requests refused as unreadable",
		len(tricks), len(spoofSources), requests, bypasses, refused)
}

func TestSpoofThroughCaddy(t *testing.T) {
	s := startCaddySite(t, proxyEnv(), "")
	if code, body := s.d.API(t, "POST", "/v1/bans", map[string]string{"ip": "127.0.0.60", "duration": "1h"}); code != 201 {
		t.Fatalf("manual ban: status %d, body %s", code, body)
	}
	spoofThroughProxy(t, "127.0.0.1:"+strconv.Itoa(s.port))
}

// spoofPaths are ways of spelling /admin/ that the proxy's matching and the
// app might read differently (as in TestSpoofPathsThroughNginx).
var spoofPaths = []string{"/admin/", "/ADMIN/", "/Admin/x", "//admin/", "/%61dmin/", "/admin%2F", "/admin/%2e%2e/admin/",
	"/./admin/", "/x/../admin/", "/admin/.", "/admin;/", "/admin/?x=/", "/admin\\", "/%2fadmin/", "/admin/%00", "/%2e/admin/"}

// spoofPathsThroughProxy: a denied source never gets the protected page,
// however the path is written.
func spoofPathsThroughProxy(t *testing.T, addr string) {
	t.Helper()
	for _, p := range spoofPaths {
		for _, src := range []string{"127.0.0.200", "127.0.0.66"} {
			r, err := rawExchange(t, src, addr, []byte("GET "+p+" HTTP/1.1\r\nHost: example.com\r\n\r\n"))
			if err != nil {
				t.Errorf("GET %s from %s: %v", p, src, err)
				continue
			}
			if strings.Contains(r.body, protectedBody) {
				t.Errorf("BYPASS: GET %s from denied %s: status %d, got the protected page", p, src, r.status)
			}
			noDoormanHeaders(t, "GET "+p+" from "+src, r.header)
		}
	}
}

func TestSpoofPathsThroughCaddy(t *testing.T) {
	s := startCaddySite(t, proxyEnv(), "")
	spoofPathsThroughProxy(t, "127.0.0.1:"+strconv.Itoa(s.port))
}

// TestCaddyBehindBalancer: with trusted_proxies naming a balancer
// (127.0.0.20; Caddy 2.6 takes it in the forward_auth block, 2.7 and later
// in the global servers option), Caddy appends the balancer to the
// X-Forwarded-For it received, and doorman, trusting the balancer too, judges
// the address the balancer appended, never one a client wrote before it.
func TestCaddyBehindBalancer(t *testing.T) {
	s := startCaddySite(t, proxyEnv("DOORMAN_TRUSTED_PROXIES", "127.0.0.1/32,127.0.0.20/32"),
		"\t\ttrusted_proxies 127.0.0.20/32\n")
	admin := s.url("/admin/")
	// From the balancer: "<what the client sent>, <the client>".
	wantProxied(t, "balancer: denylisted client, allowed claim before it",
		send(t, "127.0.0.20", "GET", admin, "", "X-Forwarded-For", "127.0.0.10, 127.0.0.66"), 403, false)
	wantProxied(t, "balancer: allowed client, denylisted claim before it",
		send(t, "127.0.0.20", "GET", admin, "", "X-Forwarded-For", "127.0.0.66, 127.0.0.10"), 200, true)
	wantProxied(t, "balancer: client outside the allow list",
		send(t, "127.0.0.20", "GET", admin, "", "X-Forwarded-For", "127.0.0.200"), 403, false)
	wantProxied(t, "balancer without X-Forwarded-For: only trusted hops, no client",
		send(t, "127.0.0.20", "GET", admin, ""), 403, false)
	// Not the balancer: Caddy replaces X-Forwarded-For with the peer.
	wantProxied(t, "untrusted peer claiming an allowed address",
		send(t, "127.0.0.66", "GET", admin, "", "X-Forwarded-For", "127.0.0.10"), 403, false)
	wantProxied(t, "untrusted peer claiming the balancer's chain",
		send(t, "127.0.0.200", "GET", admin, "", "X-Forwarded-For", "127.0.0.10, 127.0.0.20"), 403, false)
}

// TestCaddyFailClosed: doorman stopped or frozen, Caddy never serves the
// protected page; the frozen case ends within the Caddyfile's timeouts.
func TestCaddyFailClosed(t *testing.T) {
	s := startCaddySite(t, proxyEnv(), "")
	admin := s.url("/admin/")
	wantProxied(t, "doorman up", send(t, "127.0.0.10", "GET", admin, ""), 200, true)

	s.d.Stop(t)
	r := send(t, "127.0.0.10", "GET", admin, "")
	wantProxied(t, "doorman stopped", r, 502, false)
	wantProxied(t, "doorman stopped, unprotected path", send(t, "127.0.0.10", "GET", s.url("/"), ""), 200, false)

	s.d.Restart(t)
	waitProxied(t, "127.0.0.10", admin, 200)

	proc := s.d.Cmd.Process
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Signal(syscall.SIGCONT) }) // runs before doorman's stop
	waitStopped(t, proc.Pid)
	start := time.Now()
	r = send(t, "127.0.0.10", "GET", admin, "")
	elapsed := time.Since(start)
	if err := proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	wantProxied(t, "doorman frozen", r, 504, false)
	if elapsed > 6*time.Second {
		t.Errorf("frozen doorman: Caddy answered after %v, want within the 2s response_header_timeout", elapsed)
	}
	waitProxied(t, "127.0.0.10", admin, 200)
}

// waitProxied polls url from src until it answers status.
func waitProxied(t *testing.T, src, url string, status int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := send(t, src, "GET", url, "")
		if r.status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s from %s: status %d, want %d within 10s; body %.200q", url, src, r.status, status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
