// Package testproc gives integration tests loopback ports and redis-server
// processes: the nginx, compose and cluster suites live in three packages
// and share these start-up rules here. It is used by tests only.
package testproc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. It is
// drawn below Linux's ephemeral range (32768-60999): a port the kernel hands
// out there can be taken as the source port of an outgoing connection before
// the process that should listen on it binds.
func FreePort() (int, error) {
	for range 100 {
		port := 20000 + rand.IntN(12000)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port in 20000-31999")
}

// AnotherFreePort in the extra arguments of StartRedis is replaced by a free
// port, e.g. for "--cluster-port": Redis's default, port+10000, lies in the
// ephemeral range.
const AnotherFreePort = "{free-port}"

// startTimeout bounds a start, until PING answers.
const startTimeout = 15 * time.Second

// Redis is a redis-server on 127.0.0.1 without persistence.
type Redis struct {
	Port int
	URL  string // redis://127.0.0.1:Port/0

	bin    string
	args   []string
	dir    string
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
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
	cmd := exec.Command(r.bin, r.args...)
	if err := cmd.Start(); err != nil {
		return err
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(r.exited)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.Port), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(startTimeout)
	for c.Ping(context.Background()).Err() != nil {
		select {
		case <-r.exited:
			return fmt.Errorf("redis-server on port %d exited at start:\n%s", r.Port, r.Log())
		default:
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
func (r *Redis) Kill() {
	if r.cmd != nil {
		r.cmd.Process.Kill()
		<-r.exited
	}
}

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
