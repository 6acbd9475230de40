package test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// gateSite is nginx with nginx/doorman-gate.conf in front of the test app,
// /admin/ gated, and doorman on the shipped addresses (decision 9180, gate
// 9182) with DOORMAN_GATE_ORIGINS http://localhost:PORT.
type gateSite struct {
	d      *Doorman
	port   int // the proxy's
	origin string
}

func startGateSite(t *testing.T, env map[string]string) *gateSite {
	t.Helper()
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	app := testApp(t)
	n := startNginxHTTP(t, func(dir string, port int) string {
		return fmt.Sprintf(`include doorman/doorman-upstream.conf;
include doorman/doorman-gate-upstream.conf;
server {
    listen 127.0.0.1:%d;
    include doorman/doorman-gate.conf;
    location /admin/ {
        auth_request /_doorman_gate;
        error_page 401 = @doorman_gate;
        auth_request_set $doorman_user $upstream_http_x_doorman_user;
        proxy_set_header X-Doorman-User $doorman_user;
        proxy_pass http://%s;
    }
    location / { proxy_pass http://%s; }
}`, port, app.Listener.Addr(), app.Listener.Addr())
	})
	origin := "http://localhost:" + strconv.Itoa(n.Port)
	e := map[string]string{"DOORMAN_DECIDE_ADDR": "127.0.0.1:9180", "DOORMAN_GATE_ADDR": "127.0.0.1:9182",
		"DOORMAN_GATE_ORIGINS": origin, "DOORMAN_MAX_FAILURES": "3", "DOORMAN_ACCOUNT_MAX_FAILURES": "5"}
	for k, v := range env {
		e[k] = v
	}
	return &gateSite{d: startDoorman(t, e), port: n.Port, origin: origin}
}

// browser is an HTTP client from source address ip with a cookie jar,
// reaching the proxy whatever host the URL names; redirects are not followed.
func (s *gateSite) browser(t *testing.T, ip string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	nginx := "127.0.0.1:" + strconv.Itoa(s.port)
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, nginx)
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type page struct {
	status   int
	body     string
	location string
}

func (s *gateSite) do(t *testing.T, c *http.Client, method, path string, form url.Values) page {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, s.origin+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", s.origin)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return page{resp.StatusCode, string(b), resp.Header.Get("Location")}
}

var (
	csrfRe    = regexp.MustCompile(`data-csrf="([^"]+)"`)
	otpauthRe = regexp.MustCompile(`<code>(otpauth://[^<]+)</code>`)
)

func csrfOf(t *testing.T, p page) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no CSRF token in the page (%d):\n%s", p.status, p.body)
	}
	return m[1]
}

// enroll makes a link through the API, opens it in c and confirms the TOTP
// secret with the code of now; it returns the secret.
func (s *gateSite) enroll(t *testing.T, c *http.Client, user string, now time.Time) string {
	t.Helper()
	status, b := s.d.API(t, "POST", "/v1/gate/enrollments", map[string]string{"username": user})
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/gate/enrollments: %d %s", status, b)
	}
	var out struct{ URL string }
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	link := strings.TrimPrefix(out.URL, s.origin)
	tok := strings.TrimPrefix(link, "/_doorman/enroll?t=")
	// A link preview's GET leaves the link working; the page's POST uses it up.
	if preview := s.do(t, s.browser(t, "127.0.0.9"), "GET", link, nil); preview.status != 200 {
		t.Fatalf("enrollment link, a preview's GET: %d\n%s", preview.status, preview.body)
	}
	start := s.do(t, c, "GET", link, nil)
	if start.status != 200 {
		t.Fatalf("enrollment link: %d\n%s", start.status, start.body)
	}
	p := s.do(t, c, "POST", "/_doorman/enroll", url.Values{"csrf": {csrfOf(t, start)}, "t": {tok}})
	m := otpauthRe.FindStringSubmatch(p.body)
	if p.status != 200 || m == nil {
		t.Fatalf("enrollment page: %d\n%s", p.status, p.body)
	}
	if again := s.do(t, s.browser(t, "127.0.0.9"), "GET", link, nil); again.status != http.StatusNotFound {
		t.Errorf("enrollment link after use: %d, want 404", again.status)
	}
	key, err := otp.NewKeyFromURL(html.UnescapeString(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	p = s.do(t, c, "POST", "/_doorman/enroll/totp", url.Values{"csrf": {csrfOf(t, p)}, "code": {totpCode(t, key.Secret(), now)}})
	if p.status != 200 {
		t.Fatalf("confirming the TOTP secret: %d\n%s", p.status, p.body)
	}
	return key.Secret()
}

func totpCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// signIn posts the TOTP form from c.
func (s *gateSite) signIn(t *testing.T, c *http.Client, user, code string) page {
	t.Helper()
	g := s.do(t, c, "GET", "/_doorman/gate?rd=/admin/x?a=1&b=2", nil)
	if g.status != 200 {
		t.Fatalf("gate page: %d\n%s", g.status, g.body)
	}
	return s.do(t, c, "POST", "/_doorman/gate/totp", url.Values{"csrf": {csrfOf(t, g)}, "rd": {"/admin/x?a=1&b=2"},
		"username": {user}, "code": {code}})
}

// TestGateTOTP: through real nginx, a right code signs in and the same code
// again is refused; wrong codes from one address ban it (403 even on the
// gate page's POST); an account lock stops TOTP; a revocation and a
// sign-out everywhere end sessions at the next request; kill -9 after
// enrollment loses nothing.
func TestGateTOTP(t *testing.T) {
	s := startGateSite(t, nil)
	alice := s.browser(t, "127.0.0.1")
	if p := s.do(t, alice, "GET", "/admin/x?a=1", nil); p.status != http.StatusFound || p.location != "/_doorman/gate?rd=/admin/x?a=1" {
		t.Fatalf("/admin/ without a session: %d Location %q, want 302 to the gate", p.status, p.location)
	}
	now := time.Now()
	secret := s.enroll(t, alice, "alice", now)
	if p := s.do(t, alice, "GET", "/admin/x", nil); p.status != 200 || !strings.Contains(p.body, protectedBody) {
		t.Fatalf("/admin/ after enrollment: %d %q", p.status, p.body)
	}

	// kill -9 right after the enrollment: the credential, the used step,
	// and the key that signed the session are all on disk.
	s.d.Kill(t)
	if err := s.d.Start(); err != nil {
		t.Fatal(err)
	}
	if p := s.do(t, alice, "GET", "/admin/x", nil); p.status != 200 {
		t.Fatalf("/admin/ with the enrollment's session after kill -9: %d", p.status)
	}

	laptop := s.browser(t, "127.0.0.2")
	if p := s.signIn(t, laptop, "alice", totpCode(t, secret, now)); p.status != http.StatusUnauthorized {
		t.Errorf("the enrollment's code replayed after kill -9: %d, want 401", p.status)
	}
	next := totpCode(t, secret, now.Add(30*time.Second))
	if p := s.signIn(t, laptop, "alice", next); p.status != http.StatusSeeOther || p.location != "/admin/x?a=1&b=2" {
		t.Fatalf("right code: %d Location %q, want 303 to rd\n%s", p.status, p.location, p.body)
	}
	if p := s.do(t, laptop, "GET", "/admin/x", nil); p.status != 200 {
		t.Fatalf("/admin/ after a TOTP sign-in: %d", p.status)
	}
	if p := s.signIn(t, s.browser(t, "127.0.0.3"), "alice", next); p.status != http.StatusUnauthorized {
		t.Errorf("the same code again: %d, want 401", p.status)
	}

	// Wrong codes from one address ban it: 403 even on the gate's POST.
	mallory := s.browser(t, "127.0.0.66")
	for i := range 3 {
		if p := s.signIn(t, mallory, "alice", "000000"); p.status != http.StatusUnauthorized {
			t.Fatalf("wrong code %d: %d, want 401", i, p.status)
		}
	}
	if p := s.do(t, mallory, "GET", "/_doorman/gate", nil); p.status != http.StatusForbidden {
		t.Errorf("gate page from a banned address: %d, want 403", p.status)
	}
	if p := s.do(t, mallory, "POST", "/_doorman/gate/totp", url.Values{"username": {"alice"}, "code": {"111111"}}); p.status != http.StatusForbidden {
		t.Errorf("TOTP POST from a banned address: %d, want 403", p.status)
	}
	// The account has 5 failures now (the replays and the wrong codes): locked.
	p := s.signIn(t, s.browser(t, "127.0.0.4"), "alice", totpCode(t, secret, now.Add(-30*time.Second)))
	if p.status != http.StatusForbidden || !strings.Contains(p.body, "locked") {
		t.Errorf("TOTP on a locked account: %d, want 403 naming the lock\n%s", p.status, p.body)
	}
	// Since the restart: one right code, five wrong ones (two replays),
	// one lock, two requests from the banned address.
	for name, want := range map[string]float64{
		`doorman_gate_signins_total{method="totp",result="ok"}`:     1,
		`doorman_gate_signins_total{method="totp",result="wrong"}`:  5,
		`doorman_gate_signins_total{method="totp",result="locked"}`: 1,
		`doorman_gate_refused_total{why="address"}`:                 2,
	} {
		if got := metricValue(t, s.d, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	// Revocation holds at the next request.
	if out := s.cli(t, "gate", "list"); !strings.Contains(out, "alice") || !strings.Contains(out, "totp") {
		t.Fatalf("doorman gate list:\n%s", out)
	}
	status, b := s.d.API(t, "GET", "/v1/gate/credentials", nil)
	var creds struct{ Credentials []struct{ ID string } }
	if status != 200 || json.Unmarshal(b, &creds) != nil || len(creds.Credentials) != 1 {
		t.Fatalf("GET /v1/gate/credentials: %d %s", status, b)
	}
	if strings.Contains(string(b), secret) {
		t.Errorf("the TOTP secret in the API's answer: %s", b)
	}
	s.cli(t, "gate", "revoke", creds.Credentials[0].ID)
	for name, c := range map[string]*http.Client{"enrollment": alice, "sign-in": laptop} {
		if p := s.do(t, c, "GET", "/admin/x", nil); p.status != http.StatusFound {
			t.Errorf("%s session after doorman gate revoke: %d, want 302 to the gate", name, p.status)
		}
	}
	if log := s.d.Log(t); strings.Contains(log, secret) {
		t.Errorf("the TOTP secret is in doorman's log")
	}
}

// cli runs doorman's CLI against s.d and returns its output.
func (s *gateSite) cli(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(doormanBinary(t), args...)
	cmd.Env = []string{"DOORMAN_API_ADDR=" + s.d.APIAddr}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("doorman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestGateBypassAllow: a session holder from outside DOORMAN_ALLOW gets in
// only with DOORMAN_GATE_BYPASS_ALLOW=true; a denylisted address never.
func TestGateBypassAllow(t *testing.T) {
	s := startGateSite(t, map[string]string{"DOORMAN_ALLOW": "127.0.0.1/32", "DOORMAN_DENY": "127.0.0.99/32", "DOORMAN_GATE_BYPASS_ALLOW": "true"})
	alice := s.browser(t, "127.0.0.1")
	secret := s.enroll(t, alice, "alice", time.Now())
	code := totpCode(t, secret, time.Now().Add(30*time.Second))
	train := s.browser(t, "127.0.0.7")
	if p := s.signIn(t, train, "alice", code); p.status != http.StatusSeeOther {
		t.Fatalf("TOTP sign-in from outside the allowlist with the bypass: %d\n%s", p.status, p.body)
	}
	if p := s.do(t, train, "GET", "/admin/x", nil); p.status != 200 {
		t.Errorf("session holder outside the allowlist, bypass on: %d, want 200", p.status)
	}
	// The same cookie from a denylisted address.
	denied := s.browser(t, "127.0.0.99")
	u, _ := url.Parse(s.origin)
	denied.Jar.SetCookies(u, train.Jar.Cookies(u))
	if p := s.do(t, denied, "GET", "/admin/x", nil); p.status != http.StatusForbidden {
		t.Errorf("session holder from a denylisted address: %d, want 403", p.status)
	}
	s.d.Env["DOORMAN_GATE_BYPASS_ALLOW"] = "false"
	s.d.Restart(t)
	if p := s.do(t, train, "GET", "/admin/x", nil); p.status != http.StatusForbidden {
		t.Errorf("session holder outside the allowlist, bypass off: %d, want 403", p.status)
	}
	if p := s.do(t, alice, "GET", "/admin/x", nil); p.status != 200 {
		t.Errorf("session holder inside the allowlist, bypass off: %d, want 200", p.status)
	}
}
