package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/server"
	"github.com/doorman/doorman/internal/store"
)

// These tests run against a real redis-server: the one DOORMAN_TEST_REDIS
// names (as CI sets it), else one started here on a free loopback port. Each
// test uses its own key prefix, so tests sharing a server do not interfere.

var shared struct {
	once sync.Once
	url  string
	err  error
	proc *redisProc // started here, stopped by TestMain
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.proc != nil {
		shared.proc.kill()
		os.RemoveAll(shared.proc.dir)
	}
	os.Exit(code)
}

// requireRedisServer skips without the redis-server binary, or fails when
// DOORMAN_TEST_REQUIRE_ALL=1.
func requireRedisServer(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err == nil {
		return bin
	}
	msg := "redis-server not found; install with: apt-get install redis-server"
	if os.Getenv("DOORMAN_TEST_REQUIRE_ALL") == "1" {
		t.Fatal(msg + " (DOORMAN_TEST_REQUIRE_ALL=1)")
	}
	t.Skip(msg)
	return ""
}

// redisURL returns the URL of a running redis-server for this test process.
func redisURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("DOORMAN_TEST_REDIS"); u != "" {
		return u
	}
	requireRedisServer(t)
	shared.once.Do(func() {
		shared.proc, shared.err = spawnRedis(0)
		if shared.err == nil {
			shared.url = shared.proc.url
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.url
}

// redisProc is a redis-server started by a test, without persistence.
type redisProc struct {
	port   int
	url    string
	cmd    *exec.Cmd
	dir    string
	exited chan struct{} // closed when the process has exited
}

// freePort returns a loopback port that was free a moment ago, drawn below
// Linux's ephemeral range so that no outgoing connection takes it meanwhile.
func freePort() (int, error) {
	for range 100 {
		port := 20000 + mathrand.IntN(12000)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port in 20000-31999")
}

// spawnRedis starts redis-server on port (0: a free one, and another free one
// should the first be taken meanwhile) and waits for PONG. extra are more
// redis-server arguments; "CLUSTER-PORT" in them is replaced by a free port.
func spawnRedis(port int, extra ...string) (*redisProc, error) {
	var err error
	for attempt := 1; ; attempt++ {
		var r *redisProc
		r, err = spawnRedisOnce(port, extra)
		if err == nil || port != 0 || attempt == 5 {
			return r, err
		}
	}
}

func spawnRedisOnce(port int, extra []string) (*redisProc, error) {
	var err error
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}
	for _, a := range extra {
		if a == "CLUSTER-PORT" {
			bus, err := freePort()
			if err != nil {
				return nil, err
			}
			a = strconv.Itoa(bus)
		}
		args = append(args, a)
	}
	dir, err := os.MkdirTemp("", "doorman-redis-")
	if err != nil {
		return nil, err
	}
	args = append(args, "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r := &redisProc{port: port, url: fmt.Sprintf("redis://127.0.0.1:%d/0", port), cmd: cmd, dir: dir, exited: exited}
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			os.RemoveAll(dir)
			return nil, fmt.Errorf("redis-server on port %d exited at start:\n%s", port, log)
		default:
		}
		if time.Now().After(deadline) {
			r.kill()
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			os.RemoveAll(dir)
			return nil, fmt.Errorf("redis-server on port %d did not answer:\n%s", port, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r, nil
}

func (r *redisProc) kill() {
	r.cmd.Process.Kill()
	<-r.exited
}

// ownRedis starts a redis-server this test may kill and restart.
func ownRedis(t testing.TB) *redisProc {
	t.Helper()
	requireRedisServer(t)
	r, err := spawnRedis(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.kill(); os.RemoveAll(r.dir) })
	return r
}

// restart starts redis-server again on the same port, empty.
func (r *redisProc) restart(t testing.TB) {
	t.Helper()
	r.kill()
	n, err := spawnRedis(r.port)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = n.cmd
	os.RemoveAll(n.dir)
}

// prefix is a key prefix of this test's own.
func prefix(t testing.TB) string {
	r := strings.NewReplacer("/", ".", " ", "_", "{", "(", "}", ")", "*", "x")
	return fmt.Sprintf("dmtest:%s:%d:", r.Replace(t.Name()), time.Now().UnixNano())
}

// logBuf is a log sink safe for concurrent writes.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns the log lines containing all of parts.
func (l *logBuf) count(parts ...string) int {
	n := 0
	for line := range strings.SplitSeq(l.String(), "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			n++
		}
	}
	return n
}

var testPolicy = decide.Policy{MaxFailures: 5, FindTime: 10 * time.Minute, BanTime: time.Hour, BanFactor: 2,
	MaxBanTime: 5 * time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}

// node is one doorman's backend: a Core, its Local, and the Cluster.
type node struct {
	c      *Cluster
	core   *decide.Core
	local  *server.Local
	log    *logBuf
	cancel context.CancelFunc
	done   chan struct{}
}

type nodeOpt struct {
	url, prefix string
	core        *decide.Core  // nil: a new one with testPolicy
	store       *store.Store  // nil: memory only
	waitUp      bool          // return once Redis is reachable
	lists       *decide.Lists // nil: none
}

func startNode(t testing.TB, o nodeOpt) *node {
	t.Helper()
	core := o.core
	if core == nil {
		core = decide.New(testPolicy, o.lists, 10000, 10000)
	}
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo}))
	local := &server.Local{Core: core, Store: o.store, Log: log, Metrics: server.NewMetrics(core, false, time.Now)}
	c, err := New(Options{URL: o.url, Prefix: o.prefix, Local: local, Tick: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{c: c, core: core, local: local, log: lb, cancel: cancel, done: make(chan struct{})}
	go func() { c.Run(ctx); close(n.done) }()
	t.Cleanup(n.stop)
	if o.waitUp {
		waitFor(t, "redis up", 5*time.Second, c.Up)
	}
	return n
}

func (n *node) stop() {
	n.cancel()
	<-n.done
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rawClient is a plain client on url, for looking at the keys.
func rawClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// banned reports whether core bans a at now.
func banned(core *decide.Core, a string, now time.Time) bool {
	return core.Decide(netip.MustParseAddr(a), now).Reason == decide.Banned
}
