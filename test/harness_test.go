// Package test holds doorman's integration tests: the real binary, a real
// nginx, Redis, Django and docker-compose, driven over loopback.
//
// This file is the shared harness. Every helper waits by polling with a
// deadline and registers its own cleanup with t.Cleanup. Tests that need a
// tool not installed skip (or fail when DOORMAN_TEST_REQUIRE_ALL=1, as in CI).
//
// Environment knobs:
//   - DOORMAN_TEST_REQUIRE_ALL=1: a missing tool fails the test instead of skipping it.
//   - DOORMAN_TEST_BINARY=/path/to/doorman: use that binary instead of building one.
package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/testproc"
)

// binDir holds the doorman binary built for this test process; TestMain
// removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// requireTool skips the test when the executable name is not installed,
// saying how to install it; with DOORMAN_TEST_REQUIRE_ALL=1 it fails instead.
// install is the Debian package name or a full install command.
func requireTool(t *testing.T, name, install string) {
	t.Helper()
	if _, err := lookTool(name); err == nil {
		return
	}
	if !strings.Contains(install, " ") {
		install = "apt-get install " + install
	}
	testproc.Require(t, fmt.Sprintf("%s not found; install with: %s", name, install))
}

// lookTool finds an executable in PATH or in the sbin directories, which a
// non-root PATH often lacks (nginx, dockerd).
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found", name)
}

// repoRoot is the repository root: the parent of this package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// doormanBinary builds doorman from the repository once per test process
// (or returns DOORMAN_TEST_BINARY) and returns the binary's path.
func doormanBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("DOORMAN_TEST_BINARY"); p != "" {
			buildPath = p
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		dir, err := os.MkdirTemp("", "doorman-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		out := filepath.Join(dir, "doorman")
		cmd := exec.Command(goTool, "build", "-o", out, ".")
		cmd.Dir = repoRoot(t)
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, b)
			return
		}
		buildPath = out
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago; see
// testproc.FreePort.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := testproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Doorman is a running doorman started by startDoorman: a testproc.Doorman
// whose methods fail the test instead of returning errors.
type Doorman struct{ *testproc.Doorman }

// startDoorman starts the repository's doorman with env on top of a clean
// environment (no DOORMAN_* variables inherited). Unless env says otherwise,
// DOORMAN_STATE_FILE is t.TempDir()/doorman.db and both listeners get free
// loopback ports (set DOORMAN_DECIDE_ADDR=127.0.0.1:9180 together with
// lockFixedPorts to serve the shipped nginx upstream). It returns once
// GET /healthz answers 200; t.Cleanup stops the process. See
// testproc.StartDoorman.
func startDoorman(t *testing.T, env map[string]string) *Doorman {
	t.Helper()
	p, err := testproc.StartDoorman([]string{doormanBinary(t)}, t.TempDir(), env)
	if err != nil {
		t.Fatal(err)
	}
	d := &Doorman{p}
	t.Cleanup(func() {
		d.stop(t, syscall.SIGTERM)
		if t.Failed() {
			t.Logf("doorman %s log (last 40 lines):\n%s", d.DecideAddr, tail(d.Log(t), 40))
		}
	})
	return d
}

// httpClientFor returns a client that reaches addr, a "host:port" or a
// "unix:/path" listener; see testproc.HTTPClient.
func httpClientFor(addr string) *http.Client { return testproc.HTTPClient(addr) }

// get sends GET path to the API without a token.
func (d *Doorman) get(path string) (int, []byte, error) { return d.Get(path) }

// stop sends sig and waits for the process to exit, killing it after
// testproc.StopGrace (an error of the test). It does nothing when the
// process already exited.
func (d *Doorman) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := d.Doorman.Stop(sig); err != nil {
		t.Error(err)
	}
}

// stopProcess sends sig to cmd and waits for exited (closed when cmd.Wait
// returns); past testproc.StopGrace it kills the process and reports false.
func stopProcess(cmd *exec.Cmd, exited <-chan struct{}, sig os.Signal) bool {
	return testproc.Stop(cmd, exited, sig) == nil
}

// Kill stops doorman with SIGKILL: no graceful shutdown, no final writes.
func (d *Doorman) Kill(t *testing.T) { t.Helper(); d.Doorman.Kill() }

// Stop stops doorman with SIGTERM and waits for it to exit.
func (d *Doorman) Stop(t *testing.T) { t.Helper(); d.stop(t, syscall.SIGTERM) }

// Restart stops doorman if it is running and starts it again with the same
// environment (same addresses, same state file), waiting for /healthz.
func (d *Doorman) Restart(t *testing.T) {
	t.Helper()
	d.Stop(t)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
}

// Log returns everything doorman wrote so far.
func (d *Doorman) Log(t *testing.T) string { t.Helper(); return d.Doorman.Log() }

// API sends one request to doorman's API and returns the status and body.
// body is nil (no body), a []byte or string (sent as is) or a value sent as
// JSON. The bearer token is DOORMAN_API_TOKEN from d.Env when set.
func (d *Doorman) API(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, "http://doorman"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok := d.Env["DOORMAN_API_TOKEN"]; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := d.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// Nginx is a running nginx started by startNginx. Dir holds nginx.conf,
// error.log, access.log (format: remote_addr status "request") and the symlink Dir/doorman -> the repository's
// nginx/ directory, so configs include the shipped snippets as
// doorman/doorman-location.conf, exactly as documented for /etc/nginx.
type Nginx struct{ *testproc.Nginx }

// URL returns http://127.0.0.1:Port + path.
func (n *Nginx) URL(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(n.Port) + path
}

// startNginx runs nginx from PATH with a generated nginx.conf whose http
// block includes the repository's nginx/doorman-upstream.conf and holds one
// server listening on 127.0.0.1:Port with serverBody inside (typically
// "include doorman/doorman-location.conf;" and a protected location).
// It returns once nginx accepts connections; t.Cleanup stops it.
func startNginx(t *testing.T, serverBody string) *Nginx {
	t.Helper()
	return startNginxHTTP(t, func(_ string, port int) string {
		return fmt.Sprintf("include doorman/doorman-upstream.conf;\n"+
			"server {\n    listen 127.0.0.1:%d;\n%s\n}\n", port, serverBody)
	})
}

// startNginxHTTP is startNginx with the whole http block body generated by
// httpBody from nginx's directory (Nginx.Dir) and the port to listen on.
func startNginxHTTP(t *testing.T, httpBody func(dir string, port int) string) *Nginx {
	t.Helper()
	requireTool(t, "nginx", "nginx")
	bin, _ := lookTool("nginx")
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(repoRoot(t), "nginx"), filepath.Join(dir, "doorman")); err != nil {
		t.Fatal(err)
	}
	var lastErr string
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		conf := nginxConf(dir, httpBody(dir, port))
		if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		n, err := testproc.StartNginx(bin, dir, port)
		if err == nil {
			t.Cleanup(func() {
				if err := n.Stop(); err != nil {
					t.Error(err)
				}
				if t.Failed() {
					t.Logf("nginx error log:\n%s", n.Log())
				}
			})
			return &Nginx{n}
		}
		lastErr = err.Error()
		if !strings.Contains(lastErr, "Address already in use") {
			break
		}
	}
	t.Fatalf("nginx did not start: %s", lastErr)
	return nil
}

func nginxConf(dir, httpBody string) string {
	user := ""
	if os.Geteuid() == 0 {
		// Workers would run as nobody, which cannot enter t.TempDir (0700).
		user = "user root;\n"
	}
	return user + `worker_processes 1;
pid ` + dir + `/nginx.pid;
error_log ` + dir + `/error.log info;
events { worker_connections 256; }
http {
    default_type application/octet-stream;
    client_body_temp_path ` + dir + `/tmp/body;
    proxy_temp_path ` + dir + `/tmp/proxy;
    fastcgi_temp_path ` + dir + `/tmp/fastcgi;
    uwsgi_temp_path ` + dir + `/tmp/uwsgi;
    scgi_temp_path ` + dir + `/tmp/scgi;
    log_format test '$remote_addr $status "$request"';
    access_log ` + dir + `/access.log test;
` + httpBody + `
}
`
}

// clientFrom returns an HTTP client whose connections come from the given
// source address (e.g. 127.0.0.50), so nginx sees it as $remote_addr.
// Keep-alives are on; redirects are not followed; no proxy is used.
func clientFrom(ip string) *http.Client {
	src := net.ParseIP(ip)
	if src == nil {
		panic("clientFrom: not an IP: " + ip)
	}
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         dialer.DialContext,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     time.Minute,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// lockFixedPorts holds an exclusive flock on /tmp/doorman-test-ports.lock
// until the test ends, for tests that listen on the fixed ports 9180/9181
// (the shipped nginx upstream points at 127.0.0.1:9180). It blocks while
// another test, in this or another process, holds the lock. Call it before
// starting anything, so its cleanup runs after the processes are stopped.
func lockFixedPorts(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/tmp/doorman-test-ports.lock", os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	})
}
