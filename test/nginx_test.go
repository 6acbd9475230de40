package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bodies that tell who answered: the app (protected or public part) or
// nginx's error pages from nginx/403.html and nginx/503.html.
const (
	protectedBody = "protected admin page"
	publicBody    = "public page"
	page403       = "<title>403 Forbidden</title>"
	page503       = "<title>503 Service Unavailable</title>"
)

// testApp is the upstream app: /admin/... is the protected page, anything
// else the public one.
func testApp(t *testing.T) *httptest.Server {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if strings.HasPrefix(r.URL.Path, "/admin/") {
			io.WriteString(w, protectedBody+" "+r.URL.Path)
			return
		}
		io.WriteString(w, publicBody+" "+r.URL.Path)
	}))
	t.Cleanup(app.Close)
	return app
}

// site is nginx/site.conf.example served by a real nginx in front of a
// test app, with doorman on the shipped upstream address 127.0.0.1:9180.
type site struct {
	d   *Doorman
	n   *Nginx
	app *httptest.Server
}

// startSite starts doorman with env (decision listener on 127.0.0.1:9180),
// the app, and nginx running nginx/site.conf.example, adapted only where a
// test must differ from a real host: the listen port, the app address and
// the file paths.
func startSite(t *testing.T, env map[string]string) *site {
	t.Helper()
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	app := testApp(t)
	e := map[string]string{"DOORMAN_DECIDE_ADDR": "127.0.0.1:9180"}
	for k, v := range env {
		e[k] = v
	}
	d := startDoorman(t, e)
	example, err := os.ReadFile(filepath.Join(repoRoot(t), "nginx", "site.conf.example"))
	if err != nil {
		t.Fatal(err)
	}
	n := startNginxHTTP(t, func(dir string, port int) string {
		return replaceAll(t, string(example), []string{
			"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port),
			"server 127.0.0.1:8000;", "server " + app.Listener.Addr().String() + ";",
			"/etc/nginx/doorman/", dir + "/doorman/",
			"/var/log/nginx/app.access.log", dir + "/site.access.log",
		})
	})
	return &site{d: d, n: n, app: app}
}

// replaceAll applies old/new pairs, failing when an old string is missing,
// so a change to the example cannot silently bypass the adaptation.
func replaceAll(t *testing.T, s string, pairs []string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("site.conf.example no longer contains %q", pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// response is what a test looks at in an answer through nginx.
type response struct {
	status     int
	body       string
	retryAfter string
	reused     bool   // the request went over an already open connection
	localAddr  string // the client side of that connection
}

// get sends GET url from c with extra headers (each pair added, so a name
// may repeat).
func get(t *testing.T, c *http.Client, url string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	var r response
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			r.reused = info.Reused
			r.localAddr = info.Conn.LocalAddr().String()
		},
	}))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	r.status, r.body, r.retryAfter = resp.StatusCode, string(b), resp.Header.Get("Retry-After")
	return r
}

// wantPage checks the status and that the body holds want (and, unless the
// protected page is wanted, that it does not hold the protected page).
func wantPage(t *testing.T, name string, r response, status int, want string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d, want %d; body %.200q", name, r.status, status, r.body)
	}
	if !strings.Contains(r.body, want) {
		t.Errorf("%s: body %.200q, want it to contain %q", name, r.body, want)
	}
	if want != protectedBody && strings.Contains(r.body, protectedBody) {
		t.Errorf("%s: body %.200q leaks the protected page", name, r.body)
	}
}

// waitFile polls until the file contains every one of wants.
func waitFile(t *testing.T, path string, wants ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		missing := ""
		for _, w := range wants {
			if !strings.Contains(string(b), w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not contain %q; it holds:\n%s", path, missing, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var listsEnv = map[string]string{
	"DOORMAN_ALLOW":        "127.0.0.0/25",
	"DOORMAN_DENY":         "127.0.0.66",
	"DOORMAN_MAX_FAILURES": "3",
	"DOORMAN_API_TOKEN":    "test-token",
}

func TestNginxAllowDeny(t *testing.T) {
	s := startSite(t, listsEnv)
	admin := s.n.URL("/admin/")

	wantPage(t, "allowlisted", get(t, clientFrom("127.0.0.10"), admin), 200, protectedBody)
	wantPage(t, "outside DOORMAN_ALLOW", get(t, clientFrom("127.0.0.200"), admin), 403, page403)
	wantPage(t, "denylisted", get(t, clientFrom("127.0.0.66"), admin), 403, page403)
	wantPage(t, "unprotected location, outside DOORMAN_ALLOW",
		get(t, clientFrom("127.0.0.200"), s.n.URL("/")), 200, publicBody)

	// auth_request_set carries doorman's reason into the access log.
	waitFile(t, filepath.Join(s.n.Dir, "site.access.log"),
		`127.0.0.10 - - `, `"GET /admin/ HTTP/1.1" 200 `, "doorman=allowed",
		"doorman=not-allowlisted", "doorman=denylisted")
}

func TestNginxBanAfterFailures(t *testing.T) {
	s := startSite(t, listsEnv)
	admin := s.n.URL("/admin/")
	c50, c51 := clientFrom("127.0.0.50"), clientFrom("127.0.0.51")

	first := get(t, c50, admin)
	wantPage(t, "127.0.0.50 before failures", first, 200, protectedBody)
	wantPage(t, "127.0.0.51 before failures", get(t, c51, admin), 200, protectedBody)

	for i := 1; i <= 3; i++ {
		code, body := s.d.API(t, "POST", "/v1/failures", map[string]string{"ip": "127.0.0.50", "username": "admin"})
		if code != 200 {
			t.Fatalf("failure %d: status %d, body %s", i, code, body)
		}
		var got struct {
			Failures int  `json:"failures"`
			Banned   bool `json:"banned"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("failure %d: %v in %s", i, err, body)
		}
		if got.Failures != i || got.Banned != (i == 3) {
			t.Fatalf("failure %d: got %s, want failures=%d banned=%v", i, body, i, i == 3)
		}
	}

	// The keep-alive connection opened before the ban is denied too.
	banned := get(t, c50, admin)
	if !banned.reused || banned.localAddr != first.localAddr {
		t.Fatalf("request after the ban used a new connection (%s, reused=%v), want the open one %s",
			banned.localAddr, banned.reused, first.localAddr)
	}
	wantPage(t, "127.0.0.50 banned, same connection", banned, 403, page403)
	if n, err := strconv.Atoi(banned.retryAfter); err != nil || n <= 0 || n > 3600 {
		t.Errorf("Retry-After %q, want whole seconds in (0, 3600]", banned.retryAfter)
	}
	wantPage(t, "127.0.0.50 banned, new connection", get(t, clientFrom("127.0.0.50"), admin), 403, page403)
	wantPage(t, "127.0.0.51 neighbour", get(t, c51, admin), 200, protectedBody)
	waitFile(t, filepath.Join(s.n.Dir, "site.access.log"), "doorman=banned")
	if log := s.d.Log(t); !strings.Contains(log, "msg=ban") || !strings.Contains(log, "ip=127.0.0.50") {
		t.Errorf("doorman log has no ban line for 127.0.0.50:\n%s", log)
	}

	if code, body := s.d.API(t, "DELETE", "/v1/bans/127.0.0.50", nil); code != 204 {
		t.Fatalf("unban: status %d, body %s", code, body)
	}
	wantPage(t, "127.0.0.50 unbanned", get(t, c50, admin), 200, protectedBody)
}

func TestNginxSpoofedHeaders(t *testing.T) {
	s := startSite(t, listsEnv)
	admin := s.n.URL("/admin/")
	if code, body := s.d.API(t, "POST", "/v1/bans", map[string]string{"ip": "127.0.0.60", "duration": "1h"}); code != 201 {
		t.Fatalf("manual ban: status %d, body %s", code, body)
	}

	// Each client claims, in every way a header can, to be an address with
	// the opposite verdict; each must get exactly its real verdict.
	clients := []struct {
		src    string
		claim  string // an address whose verdict differs from src's
		status int
		page   string
	}{
		{"127.0.0.60", "127.0.0.61", 403, page403},  // banned, claims an allowed address
		{"127.0.0.200", "127.0.0.61", 403, page403}, // outside DOORMAN_ALLOW
		{"127.0.0.66", "127.0.0.61", 403, page403},  // denylisted
		{"127.0.0.61", "127.0.0.60", 200, protectedBody},
		{"127.0.0.62", "127.0.0.66", 200, protectedBody},
		{"127.0.0.63", "127.0.0.200", 200, protectedBody},
	}
	spoofs := []struct {
		name    string
		headers func(claim string) []string
	}{
		{"X-Real-IP", func(c string) []string { return []string{"X-Real-IP", c} }},
		{"X-Forwarded-For", func(c string) []string { return []string{"X-Forwarded-For", c} }},
		{"both", func(c string) []string { return []string{"X-Real-IP", c, "X-Forwarded-For", c} }},
		{"repeated X-Real-IP", func(c string) []string { return []string{"X-Real-IP", c, "X-Real-IP", c} }},
		{"X-Forwarded-For list", func(c string) []string { return []string{"X-Forwarded-For", c + ", " + c} }},
		{"Forwarded", func(c string) []string { return []string{"Forwarded", "for=" + c} }},
		{"other client-IP headers", func(c string) []string {
			return []string{"True-Client-IP", c, "CF-Connecting-IP", c, "X-Client-IP", c, "X-Cluster-Client-IP", c}
		}},
		{"garbage X-Real-IP", func(string) []string { return []string{"X-Real-IP", "not-an-ip"} }},
		{"empty X-Real-IP", func(string) []string { return []string{"X-Real-IP", ""} }},
		{"X-Real-IP with port", func(c string) []string { return []string{"X-Real-IP", c + ":1234"} }},
		{"mapped X-Real-IP", func(c string) []string { return []string{"X-Real-IP", "::ffff:" + c} }},
		{"overlong X-Real-IP", func(c string) []string { return []string{"X-Real-IP", strings.Repeat(c+",", 500)} }},
	}
	for _, sp := range spoofs {
		t.Run(sp.name, func(t *testing.T) {
			for _, c := range clients {
				name := fmt.Sprintf("%s claiming %s", c.src, c.claim)
				wantPage(t, name, get(t, clientFrom(c.src), admin, sp.headers(c.claim)...), c.status, c.page)
			}
		})
	}
}

func TestNginxFailClosed(t *testing.T) {
	s := startSite(t, listsEnv)
	admin := s.n.URL("/admin/")
	good := clientFrom("127.0.0.10")
	wantPage(t, "doorman up", get(t, good, admin), 200, protectedBody)

	s.d.Stop(t)
	down := get(t, good, admin)
	wantPage(t, "doorman stopped", down, 503, page503)
	if down.retryAfter == "" {
		t.Errorf("503 without Retry-After")
	}
	wantPage(t, "doorman stopped, outside DOORMAN_ALLOW", get(t, clientFrom("127.0.0.200"), admin), 503, page503)
	wantPage(t, "doorman stopped, unprotected location", get(t, good, s.n.URL("/")), 200, publicBody)

	s.d.Restart(t)
	waitStatus(t, good, admin, 200)
	wantPage(t, "doorman restarted", get(t, good, admin), 200, protectedBody)
	wantPage(t, "doorman restarted, outside DOORMAN_ALLOW", get(t, clientFrom("127.0.0.200"), admin), 403, page403)

	// A doorman that accepts but does not answer fails closed after the
	// location's proxy_read_timeout (2s), not nginx's default 60s.
	proc := s.d.Cmd.Process
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Signal(syscall.SIGCONT) }) // runs before doorman's stop
	waitStopped(t, proc.Pid)
	start := time.Now()
	hung := get(t, good, admin)
	elapsed := time.Since(start)
	if err := proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	wantPage(t, "doorman hung", hung, 503, page503)
	if hung.status != 503 {
		out, _ := exec.Command("ss", "-ltnp", "sport = :9180").CombinedOutput()
		t.Logf("doorman pid %d; listeners on 9180:\n%s", proc.Pid, out)
	}
	if elapsed > 5*time.Second {
		t.Errorf("hung doorman: nginx answered after %v, want within the 2s read timeout", elapsed)
	}
	waitStatus(t, good, admin, 200)
}

// waitStopped polls until every thread of process pid is stopped: kill
// returns before a multi-threaded process has stopped.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := len(tasks) > 0
		for _, task := range tasks {
			b, err := os.ReadFile(task)
			// The state follows the parenthesized command name.
			if i := strings.LastIndexByte(string(b), ')'); err != nil || i < 0 || !strings.HasPrefix(string(b[i:]), ") T") {
				stopped = false
			}
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not stopped within 5s of SIGSTOP", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitStatus polls url from c until it answers status.
func waitStatus(t *testing.T, c *http.Client, url string, status int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := get(t, c, url)
		if r.status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: status %d, want %d within 10s; body %.200q", url, r.status, status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNginxDoormanNotReachable(t *testing.T) {
	s := startSite(t, listsEnv)
	c := clientFrom("127.0.0.70")
	post := func(path, body string) response {
		req, err := http.NewRequest(http.MethodPost, s.n.URL(path), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer test-token")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return response{status: resp.StatusCode, body: string(b)}
	}
	// Whatever nginx does with these, doorman must not see them: the public
	// app answers, or nginx says 404 for the internal locations.
	for i := 0; i < 5; i++ {
		for _, p := range []string{"/v1/failures", "/_doorman/v1/failures", "/decide/v1/failures"} {
			r := post(p, `{"ip":"127.0.0.70"}`)
			if r.status != 200 || !strings.Contains(r.body, publicBody) {
				t.Fatalf("POST %s through nginx: status %d body %.200q, want the public app", p, r.status, r.body)
			}
		}
	}
	for _, p := range []string{"/_doorman", "/_doorman/403.html", "/_doorman/503.html"} {
		if r := get(t, c, s.n.URL(p)); r.status != 404 {
			t.Errorf("GET %s through nginx: status %d, want 404 (internal)", p, r.status)
		}
	}
	if r := post("/_doorman", `{"ip":"127.0.0.70"}`); r.status != 404 {
		t.Errorf("POST /_doorman through nginx: status %d, want 404 (internal)", r.status)
	}

	// doorman counted none of them.
	code, body := s.d.API(t, "POST", "/v1/failures", map[string]string{"ip": "127.0.0.70"})
	if code != 200 || !strings.Contains(string(body), `"failures":1`) {
		t.Errorf("first failure via the API: status %d body %s, want failures 1", code, body)
	}
	wantPage(t, "127.0.0.70 after posts through nginx", get(t, c, s.n.URL("/admin/")), 200, protectedBody)
}

// The fail-open variant documented in docs/nginx.md (keep in sync): with
// doorman down the app is served, but denials still apply while it is up.
func TestNginxFailOpenVariant(t *testing.T) {
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	app := testApp(t)
	d := startDoorman(t, map[string]string{"DOORMAN_DECIDE_ADDR": "127.0.0.1:9180", "DOORMAN_ALLOW": "127.0.0.0/25"})
	n := startNginx(t, `
    include doorman/doorman-location.conf;

    location /admin/ {
        auth_request /_doorman;
        error_page 500 = @admin_unchecked;
        proxy_pass http://`+app.Listener.Addr().String()+`;
    }
    location @admin_unchecked {
        proxy_pass http://`+app.Listener.Addr().String()+`;
    }
`)
	admin := n.URL("/admin/")
	wantPage(t, "doorman up, allowed", get(t, clientFrom("127.0.0.10"), admin), 200, protectedBody)
	if r := get(t, clientFrom("127.0.0.200"), admin); r.status != 403 {
		t.Errorf("doorman up, outside DOORMAN_ALLOW: status %d, want 403", r.status)
	}
	d.Stop(t)
	wantPage(t, "doorman down, fail open", get(t, clientFrom("127.0.0.200"), admin), 200, protectedBody)
}

// The unix-socket variant of doorman-upstream.conf.
func TestNginxUnixSocket(t *testing.T) {
	requireTool(t, "nginx", "nginx")
	app := testApp(t)
	sock := filepath.Join(t.TempDir(), "decide.sock")
	d := startDoorman(t, map[string]string{"DOORMAN_DECIDE_ADDR": "unix:" + sock, "DOORMAN_DENY": "127.0.0.66"})
	upstream, err := os.ReadFile(filepath.Join(repoRoot(t), "nginx", "doorman-upstream.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := replaceAll(t, string(upstream), []string{
		"    server 127.0.0.1:9180;", "",
		"# server unix:/run/doorman/decide.sock;", "server unix:" + sock + ";",
	})
	n := startNginxHTTP(t, func(dir string, port int) string {
		return conf + fmt.Sprintf(`
server {
    listen 127.0.0.1:%d;
    include doorman/doorman-location.conf;
    location /admin/ {
        auth_request /_doorman;
        proxy_pass http://%s;
    }
}
`, port, app.Listener.Addr())
	})
	admin := n.URL("/admin/")
	c := clientFrom("127.0.0.10")
	for i := 0; i < 3; i++ {
		wantPage(t, "allowed over the socket", get(t, c, admin), 200, protectedBody)
	}
	for _, spoof := range []string{"127.0.0.10", "garbage"} {
		if r := get(t, clientFrom("127.0.0.66"), admin, "X-Real-IP", spoof); r.status != 403 {
			t.Errorf("denylisted over the socket claiming %s: status %d, want 403", spoof, r.status)
		}
	}
	d.Stop(t)
	if r := get(t, c, admin); r.status != 500 {
		t.Errorf("socket gone: status %d, want auth_request's 500", r.status)
	}
}
