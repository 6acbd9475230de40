package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proxies/haproxy/haproxy.cfg.example and doorman.lua run by a real HAProxy
// (Debian's haproxy, 2.6) in front of the test app. The Lua action asks
// doorman's /decide with X-Real-IP set from HAProxy's src; its requests come
// from 127.0.0.1, the only trusted proxy here.

// haproxySite is a running HAProxy with the shipped configuration, doorman
// and the app.
type haproxySite struct {
	d    *Doorman
	port int
}

func (h *haproxySite) url(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(h.port) + path
}

// haproxyEnv is the process environment for haproxy: this process's, less
// any DOORMAN_* variable, plus extra ("NAME=value").
func haproxyEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOORMAN_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// startHAProxySite starts doorman with env, the app, and HAProxy running
// proxies/haproxy/haproxy.cfg.example, adapted only where a test must differ
// from a real host: the listen address, the path of doorman.lua and the app's
// address. With defaultURL, doorman listens on 127.0.0.1:9180, the action's
// default (the test holds lockFixedPorts); else haproxy gets
// DOORMAN_DECIDE_URL.
func startHAProxySite(t *testing.T, env map[string]string, defaultURL bool) *haproxySite {
	t.Helper()
	requireTool(t, "haproxy", "haproxy")
	if defaultURL {
		lockFixedPorts(t)
		env["DOORMAN_DECIDE_ADDR"] = "127.0.0.1:9180"
	}
	app := testApp(t)
	d := startDoorman(t, env)
	root := repoRoot(t)
	shipped, err := os.ReadFile(filepath.Join(root, "proxies", "haproxy", "haproxy.cfg.example"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin, _ := lookTool("haproxy")
	var extra []string
	if !defaultURL {
		extra = append(extra, "DOORMAN_DECIDE_URL=http://"+d.DecideAddr+"/decide")
	}
	var lastLog string
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		conf := adaptConfig(t, "proxies/haproxy/haproxy.cfg.example", string(shipped),
			"lua-load /etc/haproxy/doorman.lua", "lua-load "+filepath.Join(root, "proxies", "haproxy", "doorman.lua"),
			"bind :80\n", fmt.Sprintf("bind 127.0.0.1:%d\n", port),
			"server app1 127.0.0.1:8000", "server app1 "+app.Listener.Addr().String(),
		)
		path := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-db", "-f", path)
		cmd.Env = haproxyEnv(extra...)
		ok, log := startProxy(t, "haproxy", cmd, filepath.Join(dir, "haproxy.log"), port)
		if ok {
			return &haproxySite{d: d, port: port}
		}
		lastLog = log
		if !strings.Contains(log, "Address already in use") && !strings.Contains(log, "cannot bind") {
			break
		}
	}
	t.Fatalf("haproxy did not start:\n%s", lastLog)
	return nil
}

func TestHAProxyAllowDenyBan(t *testing.T) {
	s := startHAProxySite(t, proxyEnv(), true)
	proxyContract(t, s.d, s.url)
}

func TestSpoofThroughHAProxy(t *testing.T) {
	s := startHAProxySite(t, proxyEnv(), false)
	if code, body := s.d.API(t, "POST", "/v1/bans", map[string]string{"ip": "127.0.0.60", "duration": "1h"}); code != 201 {
		t.Fatalf("manual ban: status %d, body %s", code, body)
	}
	spoofThroughProxy(t, "127.0.0.1:"+strconv.Itoa(s.port))
}

func TestSpoofPathsThroughHAProxy(t *testing.T) {
	s := startHAProxySite(t, proxyEnv(), false)
	spoofPathsThroughProxy(t, "127.0.0.1:"+strconv.Itoa(s.port))
}

// TestHAProxyFailClosed: doorman stopped or frozen, HAProxy answers 503,
// never the protected page, within a few seconds (doorman.lua's TIMEOUT_MS
// and the httpclient's retries).
func TestHAProxyFailClosed(t *testing.T) {
	s := startHAProxySite(t, proxyEnv(), false)
	admin := s.url("/admin/")
	wantProxied(t, "doorman up", send(t, "127.0.0.10", "GET", admin, ""), 200, true)

	s.d.Stop(t)
	start := time.Now()
	wantProxied(t, "doorman stopped", send(t, "127.0.0.10", "GET", admin, ""), 503, false)
	if elapsed := time.Since(start); elapsed > 8*time.Second {
		t.Errorf("doorman stopped: HAProxy answered after %v, want within about 3s", elapsed)
	}
	wantProxied(t, "doorman stopped, outside DOORMAN_ALLOW", send(t, "127.0.0.200", "GET", admin, ""), 503, false)
	wantProxied(t, "doorman stopped, unprotected path", send(t, "127.0.0.10", "GET", s.url("/"), ""), 200, false)

	s.d.Restart(t)
	waitProxied(t, "127.0.0.10", admin, 200)
	wantProxied(t, "doorman restarted, outside DOORMAN_ALLOW", send(t, "127.0.0.200", "GET", admin, ""), 403, false)

	proc := s.d.Cmd.Process
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Signal(syscall.SIGCONT) }) // runs before doorman's stop
	waitStopped(t, proc.Pid)
	start = time.Now()
	r := send(t, "127.0.0.10", "GET", admin, "")
	elapsed := time.Since(start)
	if err := proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	wantProxied(t, "doorman frozen", r, 503, false)
	if elapsed > 8*time.Second {
		t.Errorf("frozen doorman: HAProxy answered after %v, want within about 2s", elapsed)
	}
	waitProxied(t, "127.0.0.10", admin, 200)
}

// TestHAProxyBadDecideURL: a DOORMAN_DECIDE_URL the action cannot use stops
// HAProxy at start, naming the variable, rather than failing every request.
func TestHAProxyBadDecideURL(t *testing.T) {
	requireTool(t, "haproxy", "haproxy")
	bin, _ := lookTool("haproxy")
	dir := t.TempDir()
	lua := filepath.Join(repoRoot(t), "proxies", "haproxy", "doorman.lua")
	conf := "global\n    lua-load " + lua + "\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n" +
		"frontend f\n    bind 127.0.0.1:" + strconv.Itoa(freePort(t)) + "\n    http-request lua.doorman\n"
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:9180/decide", true},
		{"http://[::1]:9180/decide", true},
		{"", true}, // the default
		{"http://doorman:9180/decide", false},
		{"https://127.0.0.1:9180/decide", false},
		{"http://127.0.0.1/decide", false},
		{"127.0.0.1:9180", false},
	} {
		cmd := exec.Command(bin, "-c", "-f", path)
		cmd.Env = haproxyEnv("DOORMAN_DECIDE_URL=" + tc.url)
		out, err := cmd.CombinedOutput()
		if (err == nil) != tc.ok {
			t.Errorf("DOORMAN_DECIDE_URL=%q: haproxy -c: %v, want ok=%v\n%s", tc.url, err, tc.ok, out)
		}
		if !tc.ok && !strings.Contains(string(out), "DOORMAN_DECIDE_URL") {
			t.Errorf("DOORMAN_DECIDE_URL=%q: the error does not name the variable:\n%s", tc.url, out)
		}
	}
}
