package test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/doorman/doorman/internal/testproc"
)

// netNS is a network namespace made by a test: its name for ip netns exec
// and an open fd for setns. t.Cleanup deletes it, and every table and
// process left in it goes with it.
type netNS struct {
	Name string
	fd   int
}

func newNetNS(t *testing.T, name string) *netNS {
	t.Helper()
	requireTool(t, "ip", "iproute2")
	requireTool(t, "nft", "nftables")
	if os.Geteuid() != 0 {
		testproc.Require(t, "network namespaces need root")
	}
	name = fmt.Sprintf("dm-%s-%d", name, os.Getpid())
	_ = exec.Command("ip", "netns", "del", name).Run() // a leftover of a killed run
	run(t, "ip", "netns", "add", name)
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	ns := &netNS{Name: name, fd: int(f.Fd())}
	t.Cleanup(func() {
		f.Close()
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	ns.run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// run runs a command and fails the test with its output if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	b, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
	return string(b)
}

// run runs a command inside the namespace.
func (ns *netNS) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// argv prefixes a command line so that it runs inside the namespace.
func (ns *netNS) argv(args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns.Name}, args...)
}

// dial opens a TCP connection from src (an address of ns) to dst, from
// inside ns: the socket is made on a thread moved into ns, which dies with
// its goroutine.
func (ns *netNS) dial(src, dst string, timeout time.Duration) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is not reused
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("setns %s: %w", ns.Name, err)}
			return
		}
		d := net.Dialer{Timeout: timeout}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial("tcp", dst)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// errDropped: the connection got no answer at all, as when the kernel drops
// its SYN; a refused or reset connection is another error.
var errDropped = errors.New("dropped: no answer")

// httpStatus sends GET / over a new connection from src to dst and returns
// the status. A connection that gets no answer within timeout is errDropped.
func (ns *netNS) httpStatus(src, dst string, timeout time.Duration) (int, error) {
	c, err := ns.dial(src, dst, timeout)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return 0, errDropped
	} else if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: doorman.test\r\n\r\n"); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("reading the status line: %w", err)
	}
	var status int
	if _, err := fmt.Sscanf(line, "HTTP/1.1 %d", &status); err != nil {
		return 0, fmt.Errorf("status line %q: %w", line, err)
	}
	return status, nil
}

// kernelSite is a server namespace running nginx and doorman with kernel
// bans, and a client namespace joined to it by a veth pair.
type kernelSite struct {
	srv, cli *netNS
	dm       *Doorman
	table    string
	dir      string
	nginx    *exec.Cmd // the master, in the server namespace
}

// Addresses: the server is 192.0.2.1, 198.51.100.1 and 2001:db8::1; the
// client holds the addresses clientAddrs names.
var clientAddrs = []string{"192.0.2.10/24", "192.0.2.11/24", "198.51.100.5/24", "198.51.100.7/24"}

func startKernelSite(t *testing.T, env map[string]string) *kernelSite {
	t.Helper()
	s := &kernelSite{srv: newNetNS(t, "srv"), cli: newNetNS(t, "cli"), table: "doorman_test", dir: t.TempDir()}
	veth := fmt.Sprintf("dmv%d", os.Getpid()%100000)
	run(t, "ip", "link", "add", veth+"s", "netns", s.srv.Name, "type", "veth", "peer", "name", veth+"c", "netns", s.cli.Name)
	for _, a := range []string{"192.0.2.1/24", "198.51.100.1/24"} {
		s.srv.run(t, "ip", "addr", "add", a, "dev", veth+"s")
	}
	s.srv.run(t, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", veth+"s", "nodad")
	for _, a := range clientAddrs {
		s.cli.run(t, "ip", "addr", "add", a, "dev", veth+"c")
	}
	s.cli.run(t, "ip", "-6", "addr", "add", "2001:db8::10/64", "dev", veth+"c", "nodad")
	s.srv.run(t, "ip", "link", "set", veth+"s", "up")
	s.cli.run(t, "ip", "link", "set", veth+"c", "up")

	s.startNginx(t)
	e := map[string]string{
		"DOORMAN_NFT_TABLE":   s.table,
		"DOORMAN_DECIDE_ADDR": "127.0.0.1:9180", // the server namespace's own loopback, as the shipped upstream says
		"DOORMAN_API_ADDR":    "unix:" + filepath.Join(s.dir, "api.sock"),
		"DOORMAN_STATE_FILE":  filepath.Join(s.dir, "doorman.db"),
		"DOORMAN_NEVER_BAN":   "198.51.100.7",
		"DOORMAN_NFT_CHECK":   "1s",
	}
	for k, v := range env {
		e[k] = v
	}
	p, err := testproc.StartDoorman(s.srv.argv(doormanBinary(t)), s.dir, e)
	if err != nil {
		t.Fatal(err)
	}
	s.dm = &Doorman{p}
	t.Cleanup(func() {
		s.dm.stop(t, unix.SIGTERM)
		if t.Failed() {
			t.Logf("doorman log (last 40 lines):\n%s", tail(s.dm.Log(t), 40))
		}
	})
	return s
}

// startNginx runs nginx in the server namespace: port 80 behind doorman,
// port 8080 open to all.
func (s *kernelSite) startNginx(t *testing.T) {
	t.Helper()
	requireTool(t, "nginx", "nginx")
	bin, _ := lookTool("nginx")
	dir := filepath.Join(s.dir, "nginx")
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(repoRoot(t), "nginx"), filepath.Join(dir, "doorman")); err != nil {
		t.Fatal(err)
	}
	conf := nginxConf(dir, `include doorman/doorman-upstream.conf;
server {
    listen 80;
    listen [::]:80;
    include doorman/doorman-location.conf;
    # not "return": it answers before the access phase, where auth_request runs
    location / { auth_request /_doorman; proxy_pass http://127.0.0.1:8080; }
}
server {
    listen 8080;
    location / { return 200 "open\n"; }
}
`)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := s.srv.argv(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.nginx = cmd
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		if !stopProcess(cmd, exited, unix.SIGTERM) {
			t.Error("nginx did not stop on SIGTERM")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := s.srv.dial("", "127.0.0.1:8080", time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx in %s did not listen on 8080: %v\n%s", s.srv.Name, err, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// status is the answer to a connection from the client's address src to
// the server's port, with a short timeout for a dropped one.
func (s *kernelSite) status(t *testing.T, src, dst string) (int, error) {
	t.Helper()
	return s.cli.httpStatus(src, dst, 500*time.Millisecond)
}

// waitStatus polls until a connection from src to dst ends as want says
// (an HTTP status, or 0 for dropped).
func (s *kernelSite) waitStatus(t *testing.T, src, dst string, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := s.status(t, src, dst)
		if err != nil && !errors.Is(err, errDropped) {
			t.Fatalf("%s → %s: %v", src, dst, err)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s → %s: got %d (%v), want %d (0: dropped) within %v", src, dst, got, err, want, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantStatus checks the next connection from src to dst at once.
func (s *kernelSite) wantStatus(t *testing.T, src, dst string, want int) {
	t.Helper()
	got, err := s.status(t, src, dst)
	if err != nil && !errors.Is(err, errDropped) {
		t.Fatalf("%s → %s: %v", src, dst, err)
	}
	if got != want {
		t.Fatalf("%s → %s: got %d (%v), want %d (0: dropped)", src, dst, got, err, want)
	}
}
