package test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startGateCaddy runs proxies/caddy/Caddyfile.gate in front of the test app,
// adapted only in the site address and the three upstream addresses, with
// doorman's gate on for the site's origin.
func startGateCaddy(t *testing.T) *gateSite {
	t.Helper()
	requireTool(t, "caddy", "caddy")
	app := testApp(t)
	port, gatePort := freePort(t), freePort(t)
	origin := "http://localhost:" + strconv.Itoa(port)
	d := startDoorman(t, map[string]string{"DOORMAN_GATE_ADDR": "127.0.0.1:" + strconv.Itoa(gatePort), "DOORMAN_GATE_ORIGINS": origin,
		"DOORMAN_TRUSTED_PROXIES": "127.0.0.1/32"}) // Caddy; clients come from other 127.0.0.x
	shipped, err := os.ReadFile(filepath.Join(repoRoot(t), "proxies", "caddy", "Caddyfile.gate"))
	if err != nil {
		t.Fatal(err)
	}
	conf := adaptConfig(t, "proxies/caddy/Caddyfile.gate", string(shipped),
		"example.com {", fmt.Sprintf("{\n\tadmin off\n}\n\nhttp://:%d {\n\tbind 127.0.0.1", port),
		"forward_auth @gated 127.0.0.1:9180 {", "forward_auth @gated "+d.DecideAddr+" {",
		"reverse_proxy 127.0.0.1:9182", "reverse_proxy 127.0.0.1:"+strconv.Itoa(gatePort),
		"reverse_proxy 127.0.0.1:8000", "reverse_proxy "+app.Listener.Addr().String())
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	bin, _ := lookTool("caddy")
	cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if ok, log := startProxy(t, "caddy", cmd, filepath.Join(dir, "caddy.log"), port); !ok {
		t.Fatalf("caddy did not start:\n%s", log)
	}
	return &gateSite{d: d, port: port, origin: origin}
}

// TestGateCaddyForwardAuth: through real Caddy and /forward-auth/gate, no
// session is a 302 to the gate with the original URL in rd; after a TOTP
// sign-in the request gets in with the gate's user; an rd pointing
// elsewhere is refused, and a request naming another host is sent to the
// gate without one.
func TestGateCaddyForwardAuth(t *testing.T) {
	s := startGateCaddy(t)
	c := s.browser(t, "127.0.0.5")
	p := s.do(t, c, "GET", "/admin/x?a=1", nil)
	want := s.origin + "/_doorman/gate?rd=" + strings.ReplaceAll(url.QueryEscape(s.origin+"/admin/x?a=1"), "%2F", "/")
	if p.status != http.StatusFound || p.location != want {
		t.Fatalf("/admin/ without a session: %d Location %q, want 302 to %q", p.status, p.location, want)
	}
	g := s.do(t, c, "GET", strings.TrimPrefix(p.location, s.origin), nil)
	if g.status != 200 || !strings.Contains(g.body, `data-rd="`+s.origin+`/admin/x?a=1"`) {
		t.Fatalf("the gate page from the redirect: %d\n%s", g.status, g.body)
	}
	secret := s.enroll(t, s.browser(t, "127.0.0.6"), "alice", time.Now())
	form := url.Values{"csrf": {csrfOf(t, g)}, "rd": {s.origin + "/admin/x?a=1"}, "username": {"alice"},
		"code": {totpCode(t, secret, time.Now().Add(30*time.Second))}}
	if p := s.do(t, c, "POST", "/_doorman/gate/totp", form); p.status != http.StatusSeeOther || p.location != s.origin+"/admin/x?a=1" {
		t.Fatalf("TOTP sign-in: %d Location %q\n%s", p.status, p.location, p.body)
	}
	if p := s.do(t, c, "GET", "/admin/x", nil); p.status != 200 || !strings.Contains(p.body, protectedBody) {
		t.Fatalf("/admin/ with a session: %d %q", p.status, p.body)
	}

	for _, rd := range []string{"https://evil.example/", "//evil.example/", "/\\evil.example", "http://localhost:1/"} {
		if p := s.do(t, c, "GET", "/_doorman/gate?rd="+url.QueryEscape(rd), nil); p.status != http.StatusBadRequest {
			t.Errorf("gate page with rd %q: %d, want 400", rd, p.status)
		}
	}
	form.Set("rd", "https://evil.example/")
	if p := s.do(t, c, "POST", "/_doorman/gate/totp", form); p.status != http.StatusBadRequest {
		t.Errorf("sign-in with rd elsewhere: %d Location %q, want 400", p.status, p.location)
	}

	req, _ := http.NewRequest("GET", s.origin+"/admin/x", nil)
	req.Host = "evil.example"
	resp, err := s.browser(t, "127.0.0.2").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != s.origin+"/_doorman/gate" {
		t.Errorf("/admin/ for Host evil.example: %d Location %q, want 302 to %s/_doorman/gate without rd", resp.StatusCode, loc, s.origin)
	}
}
