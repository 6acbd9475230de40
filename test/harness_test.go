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
	"context"
	"encoding/json"
	"errors"
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

// startTimeout bounds how long a started process may take to answer.
const startTimeout = 15 * time.Second

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
	msg := fmt.Sprintf("%s not found; install with: %s", name, install)
	if os.Getenv("DOORMAN_TEST_REQUIRE_ALL") == "1" {
		t.Fatal(msg + " (DOORMAN_TEST_REQUIRE_ALL=1)")
	}
	t.Skip(msg)
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

// Doorman is a running doorman process started by startDoorman.
type Doorman struct {
	Env        map[string]string // the DOORMAN_* variables it runs with
	DecideAddr string            // as in DOORMAN_DECIDE_ADDR ("host:port" or "unix:/path")
	APIAddr    string            // as in DOORMAN_API_ADDR
	LogPath    string            // stdout and stderr of every run, appended
	Cmd        *exec.Cmd         // the current process

	bin    string
	exited chan struct{} // closed when Cmd has been waited for
	api    *http.Client
}

// startDoorman starts the repository's doorman with env on top of a clean
// environment (no DOORMAN_* variables inherited). Unless env says otherwise,
// DOORMAN_STATE_FILE is t.TempDir()/doorman.db and both listeners get free
// loopback ports (set DOORMAN_DECIDE_ADDR=127.0.0.1:9180 together with
// lockFixedPorts to serve the shipped nginx upstream). It returns once
// GET /healthz answers 200; t.Cleanup stops the process.
func startDoorman(t *testing.T, env map[string]string) *Doorman {
	t.Helper()
	bin := doormanBinary(t)
	dir := t.TempDir()
	e := map[string]string{}
	for k, v := range env {
		e[k] = v
	}
	if _, ok := e["DOORMAN_STATE_FILE"]; !ok {
		e["DOORMAN_STATE_FILE"] = filepath.Join(dir, "doorman.db")
	}
	if _, ok := e["DOORMAN_DECIDE_ADDR"]; !ok {
		e["DOORMAN_DECIDE_ADDR"] = "127.0.0.1:" + strconv.Itoa(freePort(t))
	}
	if _, ok := e["DOORMAN_API_ADDR"]; !ok {
		e["DOORMAN_API_ADDR"] = "127.0.0.1:" + strconv.Itoa(freePort(t))
	}
	d := &Doorman{
		Env:        e,
		DecideAddr: e["DOORMAN_DECIDE_ADDR"],
		APIAddr:    e["DOORMAN_API_ADDR"],
		LogPath:    filepath.Join(dir, "doorman.log"),
		bin:        bin,
		api:        httpClientFor(e["DOORMAN_API_ADDR"]),
	}
	t.Cleanup(func() {
		d.stop(t, syscall.SIGTERM)
		if t.Failed() {
			t.Logf("doorman %s log (last 40 lines):\n%s", d.DecideAddr, tail(d.Log(t), 40))
		}
	})
	d.start(t)
	return d
}

// httpClientFor returns a client that reaches addr, a "host:port" or a
// "unix:/path" listener, whatever host the request URL names.
func httpClientFor(addr string) *http.Client {
	network, address := "tcp", addr
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, address = "unix", p
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, address)
			},
			MaxIdleConnsPerHost: 4,
		},
	}
}

func (d *Doorman) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(d.bin)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOORMAN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range d.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	logf.Close() // the child holds its own descriptor
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	d.Cmd, d.exited = cmd, exited

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			t.Fatalf("doorman exited during start (%v); log:\n%s", cmd.ProcessState, d.Log(t))
		default:
		}
		if code, _, err := d.get("/healthz"); err == nil && code == http.StatusOK {
			d.api.CloseIdleConnections()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("doorman did not answer /healthz within %v; log:\n%s", startTimeout, d.Log(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *Doorman) get(path string) (int, []byte, error) {
	resp, err := d.api.Get("http://doorman" + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// stop sends sig and waits for the process to exit, killing it after a
// deadline. It does nothing when the process already exited.
func (d *Doorman) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if d.Cmd == nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	if !stopProcess(d.Cmd, d.exited, sig) {
		t.Errorf("doorman did not exit within %v of %v; killed", stopGrace, sig)
	}
	d.api.CloseIdleConnections()
}

// stopGrace is how long a process may take to exit after a signal.
const stopGrace = 10 * time.Second

// stopProcess sends sig to cmd and waits for exited (closed when cmd.Wait
// returns); past stopGrace it kills the process and reports false.
func stopProcess(cmd *exec.Cmd, exited <-chan struct{}, sig os.Signal) bool {
	cmd.Process.Signal(sig)
	select {
	case <-exited:
		return true
	case <-time.After(stopGrace):
		cmd.Process.Kill()
		<-exited
		return false
	}
}

// Kill stops doorman with SIGKILL: no graceful shutdown, no final writes.
func (d *Doorman) Kill(t *testing.T) { t.Helper(); d.stop(t, syscall.SIGKILL) }

// Stop stops doorman with SIGTERM and waits for it to exit.
func (d *Doorman) Stop(t *testing.T) { t.Helper(); d.stop(t, syscall.SIGTERM) }

// Restart stops doorman if it is running and starts it again with the same
// environment (same addresses, same state file), waiting for /healthz.
func (d *Doorman) Restart(t *testing.T) {
	t.Helper()
	d.Stop(t)
	d.start(t)
}

// Log returns everything doorman wrote so far.
func (d *Doorman) Log(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(d.LogPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

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
	resp, err := d.api.Do(req)
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
type Nginx struct {
	Port int
	Dir  string
}

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
		n := &Nginx{Port: port, Dir: dir}
		ok, msg := n.run(t, bin)
		if ok {
			return n
		}
		lastErr = msg
		if !strings.Contains(msg, "Address already in use") {
			break
		}
	}
	t.Fatalf("nginx did not start:\n%s", lastErr)
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

// run starts nginx and waits until it accepts; it reports false and the
// error log when nginx exits first.
func (n *Nginx) run(t *testing.T, bin string) (bool, string) {
	t.Helper()
	os.MkdirAll(filepath.Join(n.Dir, "tmp"), 0o755)
	errLog := filepath.Join(n.Dir, "error.log")
	out, err := os.OpenFile(filepath.Join(n.Dir, "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "-p", n.Dir, "-e", errLog, "-c", filepath.Join(n.Dir, "nginx.conf"), "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	readLogs := func() string {
		a, _ := os.ReadFile(filepath.Join(n.Dir, "stderr.log"))
		b, _ := os.ReadFile(errLog)
		return string(a) + string(b)
	}
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			return false, readLogs()
		default:
		}
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(n.Port), time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return false, "no connection within " + startTimeout.String() + "\n" + readLogs()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		// SIGTERM: fast shutdown, the master stops its workers.
		if !stopProcess(cmd, exited, syscall.SIGTERM) {
			t.Errorf("nginx did not exit within %v of SIGTERM; killed", stopGrace)
		}
		if t.Failed() {
			t.Logf("nginx error log:\n%s", readLogs())
		}
	})
	return true, ""
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
