package test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/testproc"
)

// The Django example (examples/django): its own unit tests, and the real
// Django admin behind a real nginx running nginx/site.conf.example, with a
// real doorman.

// djangoPython is Debian's interpreter: python3-django installs for it, while
// the python3 first on PATH may be another build without Django.
const djangoPython = "/usr/bin/python3"

// requireDjango skips (or, with DOORMAN_TEST_REQUIRE_ALL=1, fails) the test
// when Django 3.2 or later is not importable by /usr/bin/python3.
func requireDjango(t *testing.T) {
	t.Helper()
	check := exec.Command(djangoPython, "-c", "import django, sys; sys.exit(django.VERSION < (3, 2))")
	if check.Run() == nil {
		return
	}
	testproc.Require(t, "Django >= 3.2 for "+djangoPython+" not found; install with: apt-get install python3-django")
}

// pythonEnv is the environment for the Django processes: the test's own,
// without DOORMAN_* and DJANGO_* variables, without .pyc files in the tree,
// plus env.
func pythonEnv(env map[string]string) []string {
	var e []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOORMAN_") && !strings.HasPrefix(kv, "DJANGO_") {
			e = append(e, kv)
		}
	}
	e = append(e, "PYTHONDONTWRITEBYTECODE=1")
	for k, v := range env {
		e = append(e, k+"="+v)
	}
	return e
}

// TestDjangoAppUnit runs doorman_django's tests (examples/django/tests) with
// Django's test runner: the posted JSON, the token, the client-address rules,
// a hanging and a dead doorman, block-on-ban, all against a fake doorman.
func TestDjangoAppUnit(t *testing.T) {
	requireDjango(t)
	cmd := exec.Command(djangoPython, "-m", "django", "test", "tests", "-v", "2")
	cmd.Dir = filepath.Join(repoRoot(t), "examples", "django")
	cmd.Env = pythonEnv(map[string]string{"DJANGO_SETTINGS_MODULE": "tests.settings"})
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("django test: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^Ran (\d+) tests? in`).FindSubmatch(out)
	if m == nil || string(m[1]) == "0" || !regexp.MustCompile(`(?m)^OK`).Match(out) {
		t.Fatalf("django test ran no tests or did not say OK:\n%s", out)
	}
	t.Logf("django test: ran %s tests", m[1])
}

// djangoDemo is examples/django/demo served by its `manage.py serve`
// (wsgiref), with a fresh sqlite database and superuser.
type djangoDemo struct {
	Addr    string // 127.0.0.1:port
	LogPath string // stderr: one "access peer=... client=..." line per request
}

// startDjangoDemo migrates a new database, creates the superuser
// admin/demoPassword, and serves the demo on a free loopback port with env
// (DOORMAN_* settings) added. It returns once the demo answers;
// t.Cleanup stops it.
func startDjangoDemo(t *testing.T, env map[string]string) *djangoDemo {
	t.Helper()
	requireDjango(t)
	dir := t.TempDir()
	e := map[string]string{
		"DEMO_DB":             filepath.Join(dir, "db.sqlite3"),
		"DEMO_ADMIN_USER":     "admin",
		"DEMO_ADMIN_PASSWORD": demoPassword,
	}
	for k, v := range env {
		e[k] = v
	}
	demoDir := filepath.Join(repoRoot(t), "examples", "django", "demo")
	manage := func(args ...string) *exec.Cmd {
		cmd := exec.Command(djangoPython, append([]string{"manage.py"}, args...)...)
		cmd.Dir = demoDir
		cmd.Env = pythonEnv(e)
		return cmd
	}
	for _, args := range [][]string{{"migrate", "--noinput", "-v", "0"}, {"demo_superuser"}} {
		if out, err := manage(args...).CombinedOutput(); err != nil {
			t.Fatalf("manage.py %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	demo := &djangoDemo{Addr: "127.0.0.1:" + strconv.Itoa(freePort(t)), LogPath: filepath.Join(dir, "django.log")}
	logf, err := os.Create(demo.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := manage("serve", demo.Addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		stopProcess(cmd, exited, syscall.SIGTERM) // a kill after the grace time is fine here
		if t.Failed() {
			b, _ := os.ReadFile(demo.LogPath)
			t.Logf("django log:\n%s", b)
		}
	})
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(demo.LogPath)
			t.Fatalf("django demo exited during start:\n%s", b)
		default:
		}
		if resp, err := c.Get("http://" + demo.Addr + "/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return demo
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(demo.LogPath)
			t.Fatalf("django demo did not answer within 30s:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clients returns the client addresses in the demo's access log, one per
// request that reached Django.
func (d *djangoDemo) clients(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "access ") {
			continue
		}
		for _, field := range strings.Fields(sc.Text()) {
			if c, ok := strings.CutPrefix(field, "client="); ok {
				cs = append(cs, c)
			}
		}
	}
	return cs
}

const demoPassword = "correct horse battery staple"

// browser is one client address with its own cookies, talking to nginx.
type browser struct {
	t       *testing.T
	c       *http.Client
	base    string
	headers []string // sent with every request: spoofing attempts
}

func newBrowser(t *testing.T, ip, base string, headers ...string) *browser {
	c := clientFrom(ip)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Jar = jar
	return &browser{t: t, c: c, base: base, headers: headers}
}

func (b *browser) do(method, path string, form url.Values) (int, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(b.headers); i += 2 {
		req.Header.Add(b.headers[i], b.headers[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp.StatusCode, string(out)
}

var csrfField = regexp.MustCompile(`name="csrfmiddlewaretoken" value="([^"]+)"`)

// login fetches the admin login page and posts the form with its CSRF token
// and cookie, as a browser does; it returns the answer to the post.
func (b *browser) login(user, password string) (int, string) {
	b.t.Helper()
	status, page := b.do("GET", "/admin/login/?next=/admin/", nil)
	if status != http.StatusOK {
		b.t.Fatalf("GET /admin/login/: %d, want 200; body %.300q", status, page)
	}
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("no CSRF token in the login page: %.500q", page)
	}
	return b.do("POST", "/admin/login/?next=/admin/", url.Values{
		"csrfmiddlewaretoken": {m[1]}, "username": {user}, "password": {password}, "next": {"/admin/"},
	})
}

const (
	loginForm   = `id="login-form"`
	loginFailed = "Please enter the correct username and password"
	adminIndex  = "Site administration"
)

// TestDjangoAdminBehindNginx is the README's Django walk-through with the
// real components: failed admin logins reported by doorman_django ban the
// source at nginx; other sources are unaffected; a correct login resets the
// count; a source outside DOORMAN_ALLOW never reaches Django.
func TestDjangoAdminBehindNginx(t *testing.T) {
	requireDjango(t)
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	const token = "django-e2e-token"
	d := startDoorman(t, map[string]string{
		"DOORMAN_DECIDE_ADDR":  "127.0.0.1:9180", // the shipped upstream
		"DOORMAN_ALLOW":        "127.0.0.0/25",
		"DOORMAN_MAX_FAILURES": "3",
		"DOORMAN_API_TOKEN":    token,
	})
	demo := startDjangoDemo(t, map[string]string{
		"DOORMAN_API_URL":         "http://" + d.APIAddr,
		"DOORMAN_API_TOKEN":       token,
		"DOORMAN_TRUSTED_PROXIES": "127.0.0.1/32", // nginx connects from 127.0.0.1
		"DOORMAN_BLOCK_ON_BAN":    "1",
	})
	example, err := os.ReadFile(filepath.Join(repoRoot(t), "nginx", "site.conf.example"))
	if err != nil {
		t.Fatal(err)
	}
	n := startNginxHTTP(t, func(dir string, port int) string {
		conf := string(example)
		for _, r := range [][2]string{
			{"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port)},
			{"server 127.0.0.1:8000;", "server " + demo.Addr + ";"},
			{"/etc/nginx/doorman/", dir + "/doorman/"},
			{"/var/log/nginx/app.access.log", dir + "/site.access.log"},
		} {
			if !strings.Contains(conf, r[0]) {
				t.Fatalf("site.conf.example no longer contains %q", r[0])
			}
			conf = strings.ReplaceAll(conf, r[0], r[1])
		}
		return conf
	})
	base := n.URL("")
	wantNginx403 := func(name string, status int, body string) {
		t.Helper()
		// nginx/403.html as nginx's SSI renders it: the heading, no directive left.
		if status != http.StatusForbidden || !strings.Contains(body, "<h1>Access denied</h1>") || strings.Contains(body, "<!--#") {
			t.Errorf("%s: %d %.200q, want 403 with nginx/403.html rendered", name, status, body)
		}
	}

	// A source outside DOORMAN_ALLOW: nginx answers, Django never sees it.
	outsider := newBrowser(t, "127.0.0.200", base)
	for _, p := range []string{"/admin/", "/admin/login/", "/admin/auth/user/"} {
		status, body := outsider.do("GET", p, nil)
		wantNginx403("outsider GET "+p, status, body)
	}
	status, body := outsider.do("POST", "/admin/login/", url.Values{"username": {"admin"}, "password": {demoPassword}})
	wantNginx403("outsider POST /admin/login/", status, body)

	// The attacker fails MAX_FAILURES times, claiming to be the bystander
	// in X-Real-IP and X-Forwarded-For: nginx overwrites both (and Django
	// would ignore the second anyway), so the ban lands on the attacker's
	// own address.
	attacker := newBrowser(t, "127.0.0.10", base, "X-Real-IP", "127.0.0.11", "X-Forwarded-For", "127.0.0.11")
	for i := 1; i <= 2; i++ {
		status, body := attacker.login("admin", "wrong")
		if status != http.StatusOK || !strings.Contains(body, loginFailed) {
			t.Fatalf("failure %d: %d %.300q, want 200 with the login error", i, status, body)
		}
	}
	// The third failure bans; DOORMAN_BLOCK_ON_BAN turns this very answer
	// into Django's 403.
	status, body = attacker.login("admin", "wrong")
	if status != http.StatusForbidden || body == string(page403) || strings.Contains(body, loginForm) {
		t.Fatalf("banning failure: %d %.300q, want Django's 403", status, body)
	}
	// From now on nginx answers, on any admin page, even with the right
	// password.
	for _, p := range []string{"/admin/", "/admin/login/"} {
		status, body := attacker.do("GET", p, nil)
		wantNginx403("banned GET "+p, status, body)
	}
	status, body = attacker.do("POST", "/admin/login/", url.Values{"username": {"admin"}, "password": {demoPassword}})
	wantNginx403("banned POST /admin/login/", status, body)
	if !strings.Contains(d.Log(t), "msg=ban ip=127.0.0.10 key=127.0.0.10/32") {
		t.Errorf("doorman did not log the ban of 127.0.0.10:\n%s", d.Log(t))
	}

	// The bystander still gets the login page and can sign in.
	bystander := newBrowser(t, "127.0.0.11", base)
	status, body = bystander.do("GET", "/admin/login/", nil)
	if status != http.StatusOK || !strings.Contains(body, loginForm) {
		t.Errorf("bystander: %d %.300q, want the login page", status, body)
	}
	if status, body := bystander.login("admin", demoPassword); status != http.StatusFound {
		t.Errorf("bystander login: %d %.300q, want 302", status, body)
	}
	if status, body := bystander.do("GET", "/admin/", nil); status != http.StatusOK || !strings.Contains(body, adminIndex) {
		t.Errorf("bystander /admin/: %d %.300q, want the admin index", status, body)
	}

	// A correct login resets the count: MAX-1 failures, a success, MAX-1
	// failures again and no ban; one more failure then bans.
	user := newBrowser(t, "127.0.0.12", base)
	fails := func(b *browser, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if status, body := b.login("admin", "typo"); status != http.StatusOK || !strings.Contains(body, loginFailed) {
				t.Fatalf("127.0.0.12 failure: %d %.300q, want 200 with the login error", status, body)
			}
		}
	}
	fails(user, 2)
	if status, body := user.login("admin", demoPassword); status != http.StatusFound {
		t.Fatalf("127.0.0.12 login: %d %.300q, want 302", status, body)
	}
	if status, body := user.do("GET", "/admin/", nil); status != http.StatusOK || !strings.Contains(body, adminIndex) {
		t.Fatalf("127.0.0.12 signed in: %d %.300q, want the admin index", status, body)
	}
	// A new session from the same address (a signed-in one is redirected
	// away from the login page).
	user = newBrowser(t, "127.0.0.12", base)
	fails(user, 2)
	if status, body := user.do("GET", "/admin/login/", nil); status != http.StatusOK || !strings.Contains(body, loginForm) {
		t.Fatalf("127.0.0.12 after reset and 2 failures: %d %.300q, want the login page", status, body)
	}
	if status, _ := user.login("admin", "typo"); status != http.StatusForbidden {
		t.Errorf("127.0.0.12 third failure after the reset: %d, want 403 (banned)", status)
	}
	status, body = user.do("GET", "/admin/", nil)
	wantNginx403("127.0.0.12 banned", status, body)

	// What reached Django: the allowed sources, as nginx reported them,
	// and nothing from the outsider.
	seen := map[string]int{}
	for _, c := range demo.clients(t) {
		seen[c]++
	}
	for _, ip := range []string{"127.0.0.10", "127.0.0.11", "127.0.0.12"} {
		if seen[ip] == 0 {
			t.Errorf("no request from %s in the django log (%v); the log cannot prove the outsider's absence", ip, seen)
		}
	}
	if seen["127.0.0.200"] != 0 {
		t.Errorf("%d requests from 127.0.0.200 reached Django", seen["127.0.0.200"])
	}
	delete(seen, "None") // startDjangoDemo's own probes, straight from 127.0.0.1
	if len(seen) != 3 {
		t.Errorf("django saw clients %v, want exactly the three allowed sources", seen)
	}
}

// TestDjangoAdminBehindCaddy: the Django admin behind a real Caddy running
// proxies/caddy/Caddyfile. Caddy passes a client's own X-Real-IP through
// unless the Caddyfile overwrites it; Django believes X-Real-IP from Caddy.
// An attacker who names another address there with wrong passwords must be
// counted and banned itself, and the named address never.
func TestDjangoAdminBehindCaddy(t *testing.T) {
	requireDjango(t)
	requireTool(t, "caddy", "caddy")
	const token = "django-caddy-token"
	d := startDoorman(t, map[string]string{
		"DOORMAN_ALLOW":           "127.0.0.0/25",
		"DOORMAN_MAX_FAILURES":    "3",
		"DOORMAN_API_TOKEN":       token,
		"DOORMAN_TRUSTED_PROXIES": "127.0.0.1/32", // Caddy asks from 127.0.0.1
	})
	demo := startDjangoDemo(t, map[string]string{
		"DOORMAN_API_URL":         "http://" + d.APIAddr,
		"DOORMAN_API_TOKEN":       token,
		"DOORMAN_TRUSTED_PROXIES": "127.0.0.1/32", // Caddy connects from 127.0.0.1
		"DOORMAN_BLOCK_ON_BAN":    "1",
	})
	port, _ := startCaddy(t, d, "", demo.Addr)
	base := "http://127.0.0.1:" + strconv.Itoa(port)

	const victim = "192.0.2.99"
	attacker := newBrowser(t, "127.0.0.10", base, "X-Real-IP", victim)
	for i := 1; i <= 2; i++ {
		if status, body := attacker.login("admin", "wrong"); status != http.StatusOK || !strings.Contains(body, loginFailed) {
			t.Fatalf("failure %d: %d %.300q, want 200 with the login error", i, status, body)
		}
	}
	if status, body := attacker.login("admin", "wrong"); status != http.StatusForbidden || strings.Contains(body, loginForm) {
		t.Fatalf("banning failure: %d %.300q, want Django's 403", status, body)
	}
	// Banned at Caddy (doorman's /forward-auth), even with the right password.
	if status, _ := attacker.do("GET", "/admin/login/", nil); status != http.StatusForbidden {
		t.Errorf("attacker GET /admin/login/ after the ban: %d, want 403 from doorman", status)
	}
	status, body := attacker.do("POST", "/admin/login/", url.Values{"username": {"admin"}, "password": {demoPassword}})
	if status != http.StatusForbidden || strings.Contains(body, adminIndex) {
		t.Errorf("attacker POST /admin/login/ after the ban: %d %.200q, want 403", status, body)
	}
	log := d.Log(t)
	if !strings.Contains(log, "msg=ban ip=127.0.0.10 key=127.0.0.10/32") {
		t.Errorf("doorman did not ban the attacker 127.0.0.10:\n%s", log)
	}
	if strings.Contains(log, victim) {
		t.Errorf("doorman heard of %s, the address the attacker named in X-Real-IP:\n%s", victim, log)
	}
	for _, c := range demo.clients(t) {
		if c == victim {
			t.Errorf("Django took %s (the client's own X-Real-IP) for the client", victim)
			break
		}
	}

	// Someone else at another address signs in.
	bystander := newBrowser(t, "127.0.0.11", base)
	if status, body := bystander.login("admin", demoPassword); status != http.StatusFound {
		t.Errorf("bystander login: %d %.300q, want 302", status, body)
	}
}
