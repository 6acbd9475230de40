// Package testproc starts and stops the processes integration tests run
// against: doorman, nginx and redis-server, on loopback ports. The root
// package's tests, the test/ suites and the cluster and compose tests live in
// different packages and share these start-up and shut-down rules here: a
// start waits by polling with a deadline and returns an error carrying the
// process's log; a stop sends a signal and kills after StopGrace. It is used
// by tests only.
//
// A started process is not safe for concurrent use: one test goroutine
// starts, stops and restarts it.
package testproc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"
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

// startTimeout bounds a start, until the process answers.
const startTimeout = 15 * time.Second

// StopGrace is how long a process may take to exit after a signal before it
// is killed.
const StopGrace = 10 * time.Second

// Stop sends sig to cmd and waits for exited (closed once cmd.Wait has
// returned); past StopGrace it kills the process, waits for it and returns an
// error saying so.
func Stop(cmd *exec.Cmd, exited <-chan struct{}, sig os.Signal) error {
	cmd.Process.Signal(sig)
	select {
	case <-exited:
		return nil
	case <-time.After(StopGrace):
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s did not exit within %v of %v; killed", cmd.Path, StopGrace, sig)
	}
}

// proc is a started process and a channel closed once it has been waited
// for, after which cmd.ProcessState holds its exit status.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startProc(cmd *exec.Cmd) (proc, error) {
	if err := cmd.Start(); err != nil {
		return proc{}, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	return proc{cmd: cmd, exited: exited}, nil
}

// done reports whether the process has exited (true too when none started).
func (p proc) done() bool {
	if p.cmd == nil {
		return true
	}
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// stop is Stop, doing nothing when the process already exited.
func (p proc) stop(sig os.Signal) error {
	if p.done() {
		return nil
	}
	return Stop(p.cmd, p.exited, sig)
}

// kill sends SIGKILL and waits for the exit.
func (p proc) kill() {
	if p.done() {
		return
	}
	p.cmd.Process.Kill()
	<-p.exited
}
