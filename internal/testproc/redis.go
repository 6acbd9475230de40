package testproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// AnotherFreePort in the extra arguments of StartRedis is replaced by a free
// port, e.g. for "--cluster-port": Redis's default, port+10000, lies in the
// ephemeral range.
const AnotherFreePort = "{free-port}"

// Redis is a redis-server on 127.0.0.1 without persistence.
type Redis struct {
	Port int
	URL  string // redis://127.0.0.1:Port/0

	bin  string
	args []string
	dir  string
	p    proc
}

// StartRedis starts bin (a redis-server) on port, or on a free one if port is
// 0 (another one should the first be taken meanwhile), with extra arguments,
// and waits until it answers PING. The error carries the server's log.
func StartRedis(bin string, port int, extra ...string) (*Redis, error) {
	for attempt := 1; ; attempt++ {
		r, err := startRedis(bin, port, extra)
		if err == nil || port != 0 || attempt == 5 {
			return r, err
		}
	}
}

func startRedis(bin string, port int, extra []string) (*Redis, error) {
	var err error
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "doorman-redis-")
	if err != nil {
		return nil, err
	}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}
	for _, a := range extra {
		if a == AnotherFreePort {
			p, err := FreePort()
			if err != nil {
				os.RemoveAll(dir)
				return nil, err
			}
			a = strconv.Itoa(p)
		}
		args = append(args, a)
	}
	r := &Redis{Port: port, URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port), bin: bin, args: args, dir: dir}
	if err := r.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return r, nil
}

func (r *Redis) start() error {
	p, err := startProc(exec.Command(r.bin, r.args...))
	if err != nil {
		return err
	}
	r.p = p
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.Port), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(startTimeout)
	for c.Ping(context.Background()).Err() != nil {
		if p.done() {
			return fmt.Errorf("redis-server on port %d exited at start:\n%s", r.Port, r.Log())
		}
		if time.Now().After(deadline) {
			r.Kill()
			return fmt.Errorf("redis-server on port %d did not answer within %v:\n%s", r.Port, startTimeout, r.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Log returns the server's log file.
func (r *Redis) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
	return string(b)
}

// Kill stops the server with SIGKILL and waits for it; its data is gone.
func (r *Redis) Kill() { r.p.kill() }

// Restart kills the server and starts it again, empty, on the same port with
// the same arguments.
func (r *Redis) Restart() error {
	r.Kill()
	return r.start()
}

// Close kills the server and removes its directory.
func (r *Redis) Close() {
	r.Kill()
	os.RemoveAll(r.dir)
}

// StartSentinel starts bin (a redis-server) as one Redis Sentinel on a free
// port, monitoring the master at masterPort under the name "main" with a
// quorum of one, failing it over one second after it stops answering; it
// waits until the sentinel answers PING. URL is the sentinel's address as a
// redis:// URL without the master name.
func StartSentinel(bin string, masterPort int) (*Redis, error) {
	return StartSentinelQuorum(bin, masterPort, 1)
}

// StartSentinelQuorum is StartSentinel with the given quorum: how many
// sentinels must agree that the master is down before one fails it over.
func StartSentinelQuorum(bin string, masterPort, quorum int) (*Redis, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "doorman-sentinel-")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "sentinel.conf") // Sentinel rewrites it
	if err := os.WriteFile(conf, fmt.Appendf(nil, `port %d
bind 127.0.0.1
dir %s
logfile %s
sentinel monitor main 127.0.0.1 %d %d
sentinel down-after-milliseconds main 1000
sentinel failover-timeout main 10000
`, port, dir, filepath.Join(dir, "redis.log"), masterPort, quorum), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r := &Redis{Port: port, URL: fmt.Sprintf("redis://127.0.0.1:%d", port), bin: bin, args: []string{conf, "--sentinel"}, dir: dir}
	if err := r.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return r, nil
}
