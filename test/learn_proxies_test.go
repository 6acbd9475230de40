package test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// learnApps answers POST /wp-login.php as WordPress does (302 for the right
// password, 200 with the form again for a wrong one) and POST /login as a
// status-code login does (200, or 401); anything else 200.
func learnApps(t *testing.T) *httptest.Server {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		right := r.Method == "POST" && r.FormValue("pwd") == "right"
		switch {
		case r.URL.Path == "/wp-login.php" && right:
			http.Redirect(w, r, "/wp-admin/", http.StatusFound)
		case r.URL.Path == "/login" && r.Method == "POST" && !right:
			http.Error(w, "invalid username or password", http.StatusUnauthorized)
		default:
			io.WriteString(w, "page "+r.URL.Path)
		}
	}))
	t.Cleanup(app.Close)
	return app
}

// learnEnv is doorman's environment for the proxy tests: learning on sock
// for a WordPress login and a status login.
func learnEnv(sock string) map[string]string {
	return map[string]string{
		"DOORMAN_MAX_FAILURES":    "3",
		"DOORMAN_TRUSTED_PROXIES": "127.0.0.1/32", // the proxy; the clients are 127.0.0.2 and up
		"DOORMAN_LEARN_ADDR":      "unixgram:" + sock,
		"DOORMAN_LEARN_RULES":     "wordpress /wp-login.php; status /login",
		"DOORMAN_LOG_LEVEL":       "debug", // ignored records are logged
	}
}

// checkLearning drives one proxy at base: WordPress failures, a success
// that resets, and status-code failures that ban; a banned client gets 403
// on the protected /admin/.
func checkLearning(t *testing.T, d *Doorman, base string) {
	t.Helper()
	records := 0
	post := func(ip, path, pwd string, want int) {
		t.Helper()
		resp, err := clientFrom(ip).Post(base+path, "application/x-www-form-urlencoded", strings.NewReader("log=admin&pwd="+pwd))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		records++
		if resp.StatusCode != want {
			t.Fatalf("%s POST %s pwd=%s: %d, want %d", ip, path, pwd, resp.StatusCode, want)
		}
	}
	get := func(ip, path string) int {
		t.Helper()
		resp, err := clientFrom(ip).Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// WordPress: two failures, a success, two failures: 2, not banned.
	const wp = "127.0.0.21"
	post(wp, "/wp-login.php", "wrong", 200)
	post(wp, "/wp-login.php", "wrong", 200)
	post(wp, "/wp-login.php", "right", 302)
	post(wp, "/wp-login.php?redirect_to=x", "wrong", 200)
	post(wp, "/%77p-login.php", "wrong", 200)
	// Status: three 401s ban.
	const st = "127.0.0.22"
	post(st, "/login", "right", 200)
	for range 3 {
		post(st, "/login", "wrong", 401)
	}
	// Wait for what these records book: HAProxy also logs startProxy's probe
	// (a bad request, ignored), so a count of every record would not do.
	waitBooked(t, d, 7, 2)
	if got := failuresOf(t, d, wp); got != 2 {
		t.Errorf("%s failures = %d, want 2 (reset by the success)", wp, got)
	}
	if got := get(wp, "/admin/"); got != http.StatusOK {
		t.Errorf("%s GET /admin/: %d, want 200", wp, got)
	}
	if got := get(st, "/admin/"); got != http.StatusForbidden {
		t.Errorf("%s GET /admin/ after 3 failures: %d, want 403", st, got)
	}
	if m := learnMetrics(t, d); m["doorman_learn_failures_total"] != 7 || m["doorman_learn_successes_total"] != 2 || m["doorman_learn_parsed_total"] < records {
		t.Errorf("want 7 failures and 2 successes booked from %d records: %v", records, m)
	}
}

// waitBooked waits until doorman has booked failures and successes learned.
func waitBooked(t *testing.T, d *Doorman, failures, successes int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := learnMetrics(t, d)
		if m["doorman_learn_failures_total"] >= failures && m["doorman_learn_successes_total"] >= successes {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d failures and %d successes booked: %v", failures, successes, m)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestLearnWordPressAndStatusBehindNginx: both presets through real nginx
// with nginx/doorman-learn.conf.
func TestLearnWordPressAndStatusBehindNginx(t *testing.T) {
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	sock := filepath.Join(t.TempDir(), "learn.sock")
	env := learnEnv(sock)
	env["DOORMAN_DECIDE_ADDR"] = "127.0.0.1:9180"
	d := startDoorman(t, env)
	app := learnApps(t)
	n := learnNginx(t, sock, app.Listener.Addr().String())
	checkLearning(t, d, n.URL(""))
}

// TestLearnBehindHAProxy: both presets through real HAProxy running
// haproxy.cfg.example with proxies/haproxy/learn.cfg merged into its
// frontend.
func TestLearnBehindHAProxy(t *testing.T) {
	requireTool(t, "haproxy", "haproxy")
	sock := filepath.Join(t.TempDir(), "learn.sock")
	d := startDoorman(t, learnEnv(sock))
	app := learnApps(t)
	root := repoRoot(t)
	shipped, err := os.ReadFile(filepath.Join(root, "proxies", "haproxy", "haproxy.cfg.example"))
	if err != nil {
		t.Fatal(err)
	}
	learn, err := os.ReadFile(filepath.Join(root, "proxies", "haproxy", "learn.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	snippet := adaptConfig(t, "proxies/haproxy/learn.cfg", string(learn), "log /run/doorman/learn.sock ", "log "+sock+" ")
	dir := t.TempDir()
	bin, _ := lookTool("haproxy")
	port := freePort(t)
	conf := adaptConfig(t, "proxies/haproxy/haproxy.cfg.example", string(shipped),
		"lua-load /etc/haproxy/doorman.lua", "lua-load "+filepath.Join(root, "proxies", "haproxy", "doorman.lua"),
		"bind :80\n", fmt.Sprintf("bind 127.0.0.1:%d\n%s\n", port, snippet),
		"server app1 127.0.0.1:8000", "server app1 "+app.Listener.Addr().String(),
	)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Env = haproxyEnv("DOORMAN_DECIDE_URL=http://" + d.DecideAddr + "/decide")
	if ok, log := startProxy(t, "haproxy", cmd, filepath.Join(dir, "haproxy.log"), port); !ok {
		t.Fatalf("haproxy did not start:\n%s", log)
	}
	checkLearning(t, d, fmt.Sprintf("http://127.0.0.1:%d", port))
}

// TestLearnBehindCaddy: both presets through real Caddy running the shipped
// Caddyfile with proxies/caddy/learn.Caddyfile added to its site.
func TestLearnBehindCaddy(t *testing.T) {
	requireTool(t, "caddy", "caddy")
	sock := filepath.Join(t.TempDir(), "learn.sock")
	d := startDoorman(t, learnEnv(sock)) // first: Caddy dials the socket as it starts
	app := learnApps(t)
	learn, err := os.ReadFile(filepath.Join(repoRoot(t), "proxies", "caddy", "learn.Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	snippet := adaptConfig(t, "proxies/caddy/learn.Caddyfile", string(learn), "unixgram//run/doorman/learn.sock", "unixgram/"+sock)
	port, _ := startCaddy(t, d, "", app.Listener.Addr().String(), "\t@doorman path /admin/*\n", "\t@doorman path /admin/*\n"+snippet)
	checkLearning(t, d, fmt.Sprintf("http://127.0.0.1:%d", port))
}
