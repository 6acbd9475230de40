package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/store"
	"github.com/doorman/doorman/internal/testproc"
)

// These tests run against a real redis-server: the one DOORMAN_TEST_REDIS
// names (as CI sets it), else one started here on a free loopback port. Each
// test uses its own key prefix, so tests sharing a server do not interfere.

var shared struct {
	once sync.Once
	url  string
	err  error
	proc *testproc.Redis // started here, stopped by TestMain
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.proc != nil {
		shared.proc.Close()
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
	testproc.Require(t, "redis-server not found; install with: apt-get install redis-server")
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
			shared.url = shared.proc.URL
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.url
}

// spawnRedis starts redis-server from PATH; see testproc.StartRedis.
func spawnRedis(port int, extra ...string) (*testproc.Redis, error) {
	return testproc.StartRedis("redis-server", port, extra...)
}

// ownRedis starts a redis-server this test may kill and restart.
func ownRedis(t testing.TB) *testproc.Redis {
	t.Helper()
	requireRedisServer(t)
	r, err := spawnRedis(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
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
	local  *engine.Local
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
	noRun       bool          // the caller calls run (after setting up more)
}

func startNode(t testing.TB, o nodeOpt) *node {
	t.Helper()
	core := o.core
	if core == nil {
		core = decide.New(testPolicy, o.lists, 10000, 10000)
	}
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo}))
	local := engine.NewLocal(core, o.store, log, engine.NewMetrics(core.Stats, false, time.Now))
	c, err := New(Options{URL: o.url, Prefix: o.prefix, Local: local, Log: log, Tick: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	local.UseBackend(c)
	n := &node{c: c, core: core, local: local, log: lb}
	if o.noRun {
		return n
	}
	n.run(t)
	if o.waitUp {
		waitFor(t, "redis up", 5*time.Second, c.Up)
	}
	return n
}

// run starts the node's sync loop, stopped at the test's end.
func (n *node) run(t testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan struct{})
	go func() { n.c.Run(ctx); close(n.done) }()
	t.Cleanup(n.stop)
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
