package testproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Doorman is a doorman process serving on loopback, started by StartDoorman.
// After Stop or Kill, Cmd.ProcessState holds its exit status.
type Doorman struct {
	Env        map[string]string // the variables it runs with, on top of the inherited non-DOORMAN_* ones
	DecideAddr string            // as in DOORMAN_DECIDE_ADDR ("host:port" or "unix:/path")
	APIAddr    string            // as in DOORMAN_API_ADDR
	LogPath    string            // stdout and stderr of every run, appended
	Cmd        *exec.Cmd         // the current process

	argv []string
	p    proc
	api  *http.Client
}

// StartDoorman runs argv (doorman's binary and its arguments, or a test
// binary that runs doorman's main when env tells it to) with env on top of
// this process's environment less its DOORMAN_* variables, so no setting
// leaks in from the shell. Its log is dir/doorman.log. Unless env sets them,
// DOORMAN_STATE_FILE is dir/doorman.db, DOORMAN_RANGE_THRESHOLD is 0 and
// both listeners get free loopback ports. It returns once GET /healthz on the API answers 200; the error of a
// failed start carries doorman's log.
func StartDoorman(argv []string, dir string, env map[string]string) (*Doorman, error) {
	e := map[string]string{}
	for k, v := range env {
		e[k] = v
	}
	if _, ok := e["DOORMAN_STATE_FILE"]; !ok {
		e["DOORMAN_STATE_FILE"] = filepath.Join(dir, "doorman.db")
	}
	// The suites ban many addresses of one /24 (127.0.0.x sources, the
	// documentation ranges) to test per-address rules; range bans are tested
	// where a test turns them on.
	if _, ok := e["DOORMAN_RANGE_THRESHOLD"]; !ok {
		e["DOORMAN_RANGE_THRESHOLD"] = "0"
	}
	for _, k := range []string{"DOORMAN_DECIDE_ADDR", "DOORMAN_API_ADDR"} {
		if _, ok := e[k]; !ok {
			port, err := FreePort()
			if err != nil {
				return nil, err
			}
			e[k] = "127.0.0.1:" + strconv.Itoa(port)
		}
	}
	d := &Doorman{
		Env:        e,
		DecideAddr: e["DOORMAN_DECIDE_ADDR"],
		APIAddr:    e["DOORMAN_API_ADDR"],
		LogPath:    filepath.Join(dir, "doorman.log"),
		argv:       argv,
		api:        HTTPClient(e["DOORMAN_API_ADDR"]),
	}
	if err := d.Start(); err != nil {
		return nil, err
	}
	return d, nil
}

// HTTPClient returns a client that reaches addr, a "host:port" or a
// "unix:/path" listener, whatever host the request URL names; it uses no
// proxy and gives up on a request after 5 s.
func HTTPClient(addr string) *http.Client {
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

// Start starts doorman again after Stop or Kill, with the same environment
// (same addresses, same state file), and waits for /healthz.
func (d *Doorman) Start() error {
	if !d.p.done() {
		return errors.New("doorman is already running")
	}
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(d.argv[0], d.argv[1:]...)
	cmd.Env = environ(d.Env)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := startProc(cmd)
	logf.Close() // the child holds its own descriptor
	if err != nil {
		return err
	}
	d.Cmd, d.p = cmd, p

	deadline := time.Now().Add(startTimeout)
	for {
		if p.done() {
			return fmt.Errorf("doorman exited during start (%v); log:\n%s", cmd.ProcessState, d.Log())
		}
		if code, _, err := d.Get("/healthz"); err == nil && code == http.StatusOK {
			d.api.CloseIdleConnections()
			return nil
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("doorman did not answer /healthz on %s within %v; log:\n%s", d.APIAddr, startTimeout, d.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Get sends GET path to the API, without a token, and returns the status and
// body.
func (d *Doorman) Get(path string) (int, []byte, error) {
	resp, err := d.api.Get("http://doorman" + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Client returns the HTTP client that reaches the API (see HTTPClient).
func (d *Doorman) Client() *http.Client { return d.api }

// Stop sends sig and waits for doorman to exit, killing it after StopGrace
// (then the error says so). It does nothing when doorman already exited.
func (d *Doorman) Stop(sig os.Signal) error {
	err := d.p.stop(sig)
	d.api.CloseIdleConnections()
	return err
}

// Kill stops doorman with SIGKILL, no graceful shutdown, no final writes,
// and waits for it. It does nothing when doorman already exited.
func (d *Doorman) Kill() {
	d.p.kill()
	d.api.CloseIdleConnections()
}

// Log returns everything doorman wrote so far, or why it cannot be read.
func (d *Doorman) Log() string {
	b, err := os.ReadFile(d.LogPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Sprintf("(reading %s: %v)", d.LogPath, err)
	}
	return string(b)
}

// environ is this process's environment less its DOORMAN_* variables, with
// env on top.
func environ(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOORMAN_") {
			out = append(out, kv)
		}
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// RunDoorman runs argv in dir with env on top of this process's environment
// less its DOORMAN_* variables, as StartDoorman does, until it exits: for a
// command, or a start that must be refused. It returns the exit status and
// what it wrote to stdout and stderr; past timeout it kills the process and
// returns an error with that output.
func RunDoorman(argv []string, dir string, env map[string]string, timeout time.Duration) (int, string, error) {
	var out bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, environ(env)
	cmd.Stdout, cmd.Stderr = &out, &out
	p, err := startProc(cmd)
	if err != nil {
		return 0, "", err
	}
	select {
	case <-p.exited:
		return cmd.ProcessState.ExitCode(), out.String(), nil
	case <-time.After(timeout):
		p.kill()
		return 0, out.String(), fmt.Errorf("%s still running after %v; output:\n%s", argv[0], timeout, out.String())
	}
}
