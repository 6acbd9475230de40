package test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
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

// cpuTicks is the CPU time (user and system, in clock ticks) of pid and its
// children (nginx's workers).
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:])) // fields from the 3rd on
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	total := u + s
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, k := range strings.Fields(string(kids)) {
		if c, err := strconv.Atoi(k); err == nil {
			total += cpuTicks(t, c)
		}
	}
	return total
}

// TestKernelBannedFlood measures, in one run, what a banned client's flood
// of requests costs doorman and nginx: from an address doorman bans but
// keeps out of the kernel (DOORMAN_NFT_MIN_COUNT=2, a first ban), each
// request is answered 403 by nginx after asking doorman; from an address
// banned in the kernel, each connection attempt is dropped before nginx.
// The figure is the ratio of their CPU time per attempt.
func TestKernelBannedFlood(t *testing.T) {
	s := startKernelSite(t, map[string]string{"DOORMAN_NFT_MIN_COUNT": "2", "DOORMAN_NFT_CHECK": "1h"})
	const inKernel, outOfKernel = "192.0.2.10", "192.0.2.11"
	for range 5 {
		s.fail(t, outOfKernel)
	}
	if out := s.ban(t, inKernel, "1h"); out["kernel"] != true {
		t.Fatalf("manual ban: %v, want kernel true", out)
	}
	s.wantStatus(t, outOfKernel, "192.0.2.1:80", 403)
	n := kernelBench(1000, 10000)
	flood := func(src string, timeout time.Duration) (ticks int64, answered int) {
		before := cpuTicks(t, s.nginx.Process.Pid) + cpuTicks(t, s.dm.Cmd.Process.Pid)
		for range n {
			if code, err := s.cli.httpStatus(src, "192.0.2.1:80", timeout); err == nil {
				if code != 403 {
					t.Fatalf("%s: status %d, want 403", src, code)
				}
				answered++
			}
		}
		return cpuTicks(t, s.nginx.Process.Pid) + cpuTicks(t, s.dm.Cmd.Process.Pid) - before, answered
	}
	t403, a403 := flood(outOfKernel, 5*time.Second)
	// 20ms: a dropped SYN is not sent again within it (1s), so each attempt is one packet.
	tDrop, aDrop := flood(inKernel, 20*time.Millisecond)
	if a403 != n || aDrop != 0 {
		t.Fatalf("answered: %d of %d out of the kernel (want all), %d of %d in it (want none)", a403, n, aDrop, n)
	}
	if t403 == 0 {
		t.Fatalf("%d requests answered 403 cost no measurable CPU; the flood is too small", n)
	}
	if tDrop*5 > t403 {
		t.Errorf("dropped attempts cost %d ticks, more than a fifth of the 403s' %d", tDrop, t403)
	}
	tick := float64(time.Second) / 100 // USER_HZ
	t.Logf("%d attempts each: answered 403, doorman+nginx CPU %.1f µs a request; dropped by the kernel %.1f µs an attempt (ratio %.3f)",
		n, float64(t403)*tick/float64(n)/1e3, float64(tDrop)*tick/float64(n)/1e3, float64(tDrop)/float64(t403))
}
