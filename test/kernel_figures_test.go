package test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// kernelBench: DOORMAN_KERNEL_BENCH=1 runs the figures of docs/benchmarks.md
// at full size; otherwise at a size that checks the same things quickly.
func kernelBench(small, full int) int {
	if os.Getenv("DOORMAN_KERNEL_BENCH") == "1" {
		return full
	}
	return small
}

// in runs f on a thread moved into ns (the thread dies with f's goroutine).
func (ns *netNS) in(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is not reused
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return <-done
}

func percentiles(ds []time.Duration) (p50, p99, worst time.Duration) {
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)*99/100], ds[len(ds)-1]
}

// TestKernelFailureToDrop measures, from the client namespace, the time from
// the failure that bans an address to the first connection of that address
// the kernel drops: a client connects over and over while the app reports
// its failures; the first attempt that gets no answer ends the measure.
func TestKernelFailureToDrop(t *testing.T) {
	s := startKernelSite(t, nil)
	n := kernelBench(20, 200) // at most 200: one address of 203.0.113.0/24 each
	veth := fmt.Sprintf("dmv%d", os.Getpid()%100000)
	s.srv.run(t, "ip", "addr", "add", "203.0.113.1/24", "dev", veth+"s")
	for i := range n {
		s.cli.run(t, "ip", "addr", "add", fmt.Sprintf("203.0.113.%d/24", 10+i), "dev", veth+"c")
	}
	var lat, answer []time.Duration
	for i := range n {
		ip := fmt.Sprintf("203.0.113.%d", 10+i)
		for range 4 {
			s.fail(t, ip)
		}
		start := make(chan struct{})
		dropped := make(chan time.Time, 1)
		stop := make(chan struct{})
		go func() {
			_ = s.cli.in(func() error {
				d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
				<-start
				for {
					select {
					case <-stop:
						return nil
					default:
					}
					at := time.Now()
					c, err := d.Dial("tcp", "203.0.113.1:80")
					if err == nil {
						c.Close()
						continue
					}
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						dropped <- at
						return nil
					}
				}
			})
		}()
		start <- struct{}{}
		t0 := time.Now()
		out := s.fail(t, ip)
		answered := time.Since(t0)
		if out["kernel"] != true {
			close(stop)
			t.Fatalf("5th failure of %s: %v, want kernel true", ip, out)
		}
		select {
		case at := <-dropped:
			lat = append(lat, max(0, at.Sub(t0)))
		case <-time.After(5 * time.Second):
			close(stop)
			t.Fatalf("%s: no connection dropped within 5s of its ban", ip)
		}
		answer = append(answer, answered)
	}
	p50, p99, worst := percentiles(lat)
	a50, a99, aworst := percentiles(answer)
	t.Logf("failure → dropped, %d bans: p50 %v, p99 %v, max %v; the webhook's answer (kernel written): p50 %v, p99 %v, max %v",
		n, p50, p99, worst, a50, a99, aworst)
}

// TestKernelAPIBans: bans made through the API one by one are each in the
// kernel when their answer arrives (the periodic check is off, so only the
// ban's own write can have put it there).
func TestKernelAPIBans(t *testing.T) {
	s := startKernelSite(t, map[string]string{"DOORMAN_NFT_CHECK": "1h"})
	n := kernelBench(300, 10000)
	var took []time.Duration
	for i := range n {
		ip := fmt.Sprintf("2001:db8:1:%x::1", i)
		t0 := time.Now()
		code, body := s.dm.API(t, "POST", "/v1/bans", map[string]string{"ip": ip, "duration": "1h"})
		took = append(took, time.Since(t0))
		var out map[string]any
		if code != 201 || json.Unmarshal(body, &out) != nil || out["kernel"] != true {
			t.Fatalf("ban %s: %d %s, want 201 with kernel true", ip, code, body)
		}
		s.srv.run(t, "nft", "get", "element", "inet", s.table, "bans6", "{ "+ip+" }")
	}
	if got := len(s.kernelElements(t, "bans6")); got != n {
		t.Fatalf("bans6 holds %d elements, want %d", got, n)
	}
	p50, p99, worst := percentiles(took)
	t.Logf("%d API bans one by one, each in the kernel before its answer: answer p50 %v, p99 %v, max %v", n, p50, p99, worst)
}
