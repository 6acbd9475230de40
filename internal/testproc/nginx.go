package testproc

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Nginx is an nginx master process started by StartNginx.
type Nginx struct {
	Port int    // where it listens, on 127.0.0.1
	Dir  string // its prefix: nginx.conf, error.log, stderr.log

	p proc
}

// StartNginx runs bin in the foreground with prefix dir, dir/nginx.conf and
// the error log dir/error.log (its stdout and stderr go to dir/stderr.log),
// and returns once 127.0.0.1:port accepts connections. The error of a failed
// start carries both logs, so a caller can see "Address already in use" and
// try another port.
func StartNginx(bin, dir string, port int) (*Nginx, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, err
	}
	out, err := os.OpenFile(filepath.Join(dir, "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = out, out
	p, err := startProc(cmd)
	out.Close() // the child holds its own descriptor
	if err != nil {
		return nil, err
	}
	n := &Nginx{Port: port, Dir: dir, p: p}
	deadline := time.Now().Add(startTimeout)
	for {
		if p.done() {
			return nil, fmt.Errorf("nginx exited at start (%v):\n%s", cmd.ProcessState, n.Log())
		}
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
			c.Close()
			return n, nil
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("nginx accepted no connection on port %d within %v:\n%s", port, startTimeout, n.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log returns nginx's stderr and error log.
func (n *Nginx) Log() string {
	a, _ := os.ReadFile(filepath.Join(n.Dir, "stderr.log"))
	b, _ := os.ReadFile(filepath.Join(n.Dir, "error.log"))
	return string(a) + string(b)
}

// Stop stops nginx with SIGTERM (fast shutdown: the master stops its
// workers), killing it after StopGrace (then the error says so).
func (n *Nginx) Stop() error { return n.p.stop(syscall.SIGTERM) }
