package test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounded memory under attack: millions of distinct failing addresses
// against small and default DOORMAN_MAX_TRACKED / DOORMAN_MAX_BANS, and the
// eviction rules:
//   - ban table: a ban added to a full table evicts the ban that was added or
//     renewed longest ago, so no ban is evicted while an older one survives;
//     decisions (reads) do not change that order.
//   - failure tracker: a failure of a new address in a full tracker evicts
//     the address whose last failure is the oldest.
//
// DOORMAN_MEMORY_FULL=1 runs the full size: 4M distinct addresses at the
// default caps (1,000,000 each). The default (CI) run uses 2M addresses at
// caps of 10,000.

// procStatus returns a field of /proc/PID/status in bytes (VmRSS, VmHWM).
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q", field, line)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// pipeline sends the requests from … to-1 on one connection without
// waiting for each answer (HTTP/1.1 pipelining) and checks each answer with
// check. It may run on any goroutine: it reports with t.Errorf.
func pipeline(t *testing.T, addr, token string, from, to int, req func(i int) (method, path, body string), check func(i, status int, body []byte) error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	werr := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(c, 64<<10)
		for i := from; i < to; i++ {
			m, p, b := req(i)
			fmt.Fprintf(bw, "%s %s HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
				m, p, token, len(b), b)
		}
		werr <- bw.Flush()
	}()
	br := bufio.NewReaderSize(c, 64<<10)
	var body bytes.Buffer
	bad := 0
	for i := from; i < to; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Errorf("answer %d: %v", i, err)
			return
		}
		body.Reset()
		io.Copy(&body, resp.Body)
		resp.Body.Close()
		if err := check(i, resp.StatusCode, body.Bytes()); err != nil {
			bad++
			if bad <= 5 {
				t.Errorf("request %d: %v", i, err)
			}
		}
	}
	if err := <-werr; err != nil {
		t.Error(err)
	}
	if bad > 0 {
		t.Errorf("%d bad answers", bad)
	}
}

// logHasLine reports whether some line of log holds every one of parts.
func logHasLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// trackedAddr is the i-th address of the tracker phase: one IPv6 /64 each.
func trackedAddr(i int) string { return fmt.Sprintf("2001:db8:%x:%x::1", i>>16, i&0xffff) }

// bannedAddr is the i-th address of the ban phase: IPv4 from 11.0.0.0/8.
func bannedAddr(i int) string { return fmt.Sprintf("11.%d.%d.%d", i>>16&255, i>>8&255, i&255) }

func failureReq(ip string) (string, string, string) {
	return "POST", "/v1/failures", `{"ip":"` + ip + `"}`
}

func wantStatus(status int) func(int, int, []byte) error {
	return func(_ int, got int, body []byte) error {
		if got != status {
			return fmt.Errorf("status %d %s, want %d", got, body, status)
		}
		return nil
	}
}

func TestMemoryBounded(t *testing.T) {
	full := os.Getenv("DOORMAN_MEMORY_FULL") == "1"
	if testing.Short() && !full {
		t.Skip("sends 3M requests")
	}
	nTracked, nBanned := 1_000_000, 1_000_000
	capTracked, capBans := 10_000, 10_000
	bound := int64(64 << 20) // peak RSS allowed at the small caps
	env := map[string]string{
		"DOORMAN_STATE_FILE": "", "DOORMAN_LOG_LEVEL": "error", "DOORMAN_API_TOKEN": "mem-token",
		"DOORMAN_MAX_FAILURES": "2",
	}
	if full {
		nTracked, nBanned = 2_000_000, 2_000_000
		capTracked, capBans = 1_000_000, 1_000_000 // the defaults, left unset
		bound = 1 << 30
	} else {
		env["DOORMAN_MAX_TRACKED"] = strconv.Itoa(capTracked)
		env["DOORMAN_MAX_BANS"] = strconv.Itoa(capBans)
	}
	d := startDoorman(t, env)
	pid := d.Cmd.Process.Pid
	token := env["DOORMAN_API_TOKEN"]
	base := procStatus(t, pid, "VmRSS")

	// Sample RSS while the attack runs.
	var peakSeen int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
					peakSeen = max(peakSeen, kb<<10)
				}
			}
		}
	}()

	// Phase 1: nTracked addresses fail once each, on two connections.
	start := time.Now()
	var wg sync.WaitGroup
	for part := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pipeline(t, d.APIAddr, token, part*nTracked/2, (part+1)*nTracked/2,
				func(i int) (string, string, string) { return failureReq(trackedAddr(i)) }, wantStatus(200))
		}()
	}
	wg.Wait()
	phase1 := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}
	rss1 := procStatus(t, pid, "VmRSS")

	// Phase 2: nBanned addresses fail twice each and are banned; the last
	// tail of them one by one, to check the eviction order.
	const k = 1000 // block size for the order check
	tail := capBans + 2*k
	banned := func(i int) (string, string, string) { return failureReq(bannedAddr(i / 2)) }
	wantBan := func(i, status int, body []byte) error {
		if status != 200 || (i%2 == 1) != bytes.Contains(body, []byte(`"banned":true`)) {
			return fmt.Errorf("failure %d of %s: %d %s", i%2+1, bannedAddr(i/2), status, body)
		}
		return nil
	}
	start2 := time.Now()
	bulk := nBanned - tail
	for part := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pipeline(t, d.APIAddr, token, 2*(part*bulk/2), 2*((part+1)*bulk/2), banned, wantBan)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// The tail: t0 … t(capBans-1) fill the table with the youngest bans.
	t0 := bulk
	pipeline(t, d.APIAddr, token, 2*t0, 2*(t0+capBans), banned, wantBan)
	// Decisions on the oldest block must not save it; a manual ban renews
	// the second block.
	dc := newDecider(t, d.DecideAddr)
	for i := t0; i < t0+k; i++ {
		if r := dc.reason(t, bannedAddr(i)); r != "banned" {
			t.Fatalf("%s before the last bans: %s, want banned", bannedAddr(i), r)
		}
	}
	pipeline(t, d.APIAddr, token, t0+k, t0+2*k, func(i int) (string, string, string) {
		return "POST", "/v1/bans", `{"ip":"` + bannedAddr(i) + `","duration":"1h"}`
	}, wantStatus(201))
	// 2k more bans evict 2k: the read block, then the block after the renewed one.
	pipeline(t, d.APIAddr, token, 2*(t0+capBans), 2*(t0+capBans+2*k), banned, wantBan)
	phase2 := time.Since(start2)
	close(stop)
	sampler.Wait()

	peak := procStatus(t, pid, "VmHWM")
	rss := procStatus(t, pid, "VmRSS")
	m := scrapeMetrics(t, d)
	total := nTracked + nBanned
	t.Logf("%d distinct failing addresses (%d failed once in %v, %d banned in %v) at MAX_TRACKED=%d MAX_BANS=%d",
		total, nTracked, phase1.Round(time.Millisecond), nBanned, phase2.Round(time.Millisecond), capTracked, capBans)
	t.Logf("RSS: %s at start, %s with the tracker full, peak %s (VmHWM; %s sampled), %s at the end; process_resident_memory_bytes %s; bound %s",
		mib(base), mib(rss1), mib(peak), mib(peakSeen), mib(rss), mib(int64(m["process_resident_memory_bytes"])), mib(bound))
	t.Logf("evictions: bans %.0f, failures %.0f; held: ban records %.0f, failures tracked %.0f",
		m[`doorman_evictions_total{table="bans",kind="active"}`], m[`doorman_evictions_total{table="failures"}`],
		m["doorman_ban_records"], m["doorman_failures_tracked"])
	if peak > bound {
		t.Errorf("peak RSS %s, want at most %s", mib(peak), mib(bound))
	}
	if got, want := m[`doorman_evictions_total{table="bans",kind="active"}`], float64(nBanned-capBans); got != want {
		t.Errorf("ban evictions %.0f, want %.0f", got, want)
	}
	// Every tracked address after the first capTracked evicts one; in the
	// ban phase a unit is tracked until its second failure, so each of the
	// two connections can evict one more at most.
	if got, lo := m[`doorman_evictions_total{table="failures"}`], float64(nTracked-capTracked); got < lo || got > lo+3 {
		t.Errorf("failure evictions %.0f, want %.0f to %.0f", got, lo, lo+3)
	}
	if m["doorman_ban_records"] != float64(capBans) || m["doorman_failures_tracked"] > float64(capTracked) {
		t.Errorf("held %v ban records and %v tracked, want %d and at most %d",
			m["doorman_ban_records"], m["doorman_failures_tracked"], capBans, capTracked)
	}

	// The eviction order: survivors are the renewed block and everything
	// after the evicted block; the read block and the block after the
	// renewed one are gone.
	survives := func(i int) bool {
		return i >= t0+k && i < t0+2*k || i >= t0+3*k
	}
	wrong := 0
	check := func(i int) {
		want := "allowed"
		if survives(i) {
			want = "banned"
		}
		if r := dc.reason(t, bannedAddr(i)); r != want {
			wrong++
			if wrong <= 5 {
				t.Errorf("%s (tail position %d): %s, want %s", bannedAddr(i), i-t0, r, want)
			}
		}
	}
	if full {
		for i := t0 - 100; i < t0+4*k; i++ { // the boundaries
			check(i)
		}
		for i := t0 + 4*k; i < t0+capBans+2*k; i += 997 {
			check(i)
		}
	} else {
		got, _ := listBans(t, d)
		for i := t0 - 1000; i < t0+capBans+2*k; i++ {
			check(i)
			if _, ok := got[bannedAddr(i)+"/32"]; ok != survives(i) && wrong < 5 {
				wrong++
				t.Errorf("GET /v1/bans: %s listed=%v, want %v", bannedAddr(i), ok, survives(i))
			}
		}
		if len(got) != capBans {
			t.Errorf("GET /v1/bans lists %d, want %d", len(got), capBans)
		}
	}
	if wrong > 0 {
		t.Errorf("%d addresses with the wrong verdict after eviction", wrong)
	} else {
		t.Logf("eviction order held: the %d oldest (read just before) evicted first, the %d renewed kept, the next %d evicted", k, k, k)
	}
}

// The eviction rules, step by step, with the log lines and the state file.
func TestMemoryEvictionRule(t *testing.T) {
	t.Run("bans", func(t *testing.T) {
		d := startDoorman(t, map[string]string{"DOORMAN_MAX_BANS": "5", "DOORMAN_MAX_FAILURES": "1", "DOORMAN_LOG_LEVEL": "warn"})
		ip := func(i int) string { return fmt.Sprintf("203.0.113.%d", i) }
		fail := func(i int) {
			t.Helper()
			if code, body := d.API(t, "POST", "/v1/failures", map[string]string{"ip": ip(i)}); code != 200 || !strings.Contains(string(body), `"banned":true`) {
				t.Fatalf("failure of %s: %d %s", ip(i), code, body)
			}
		}
		dc := newDecider(t, d.DecideAddr)
		want := func(step string, banned ...int) {
			t.Helper()
			for i := 1; i <= 8; i++ {
				w := "allowed"
				for _, b := range banned {
					if b == i {
						w = "banned"
					}
				}
				if r := dc.reason(t, ip(i)); r != w {
					t.Errorf("%s: %s is %s, want %s", step, ip(i), r, w)
				}
			}
		}
		for i := 1; i <= 5; i++ {
			fail(i)
		}
		want("table full", 1, 2, 3, 4, 5)
		// Reads do not save the oldest: decisions and GET /v1/decide on 1.
		for range 3 {
			dc.reason(t, ip(1))
			d.API(t, "GET", "/v1/decide?ip="+ip(1), nil)
		}
		fail(6)
		want("6th ban evicts the oldest, 1, though it was just read", 2, 3, 4, 5, 6)
		// Renewing 2 (a manual ban of it) makes it the youngest.
		if code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": ip(2), "duration": "1h"}); code != 201 {
			t.Fatalf("renew: %d %s", code, body)
		}
		fail(7)
		want("7th ban evicts 3, not the renewed 2", 2, 4, 5, 6, 7)
		m := scrapeMetrics(t, d)
		if m[`doorman_evictions_total{table="bans",kind="active"}`] != 2 || m["doorman_ban_records"] != 5 {
			t.Errorf("evictions %v, records %v, want 2 and 5", m[`doorman_evictions_total{table="bans",kind="active"}`], m["doorman_ban_records"])
		}
		if log := d.Log(t); !logHasLine(log, "level=WARN", "evict", "table=bans") {
			t.Errorf("no warn line for the eviction:\n%s", log)
		}
		// The evicted bans left the state file too: not back after kill -9.
		d.Kill(t)
		d.Restart(t)
		dc = newDecider(t, d.DecideAddr)
		want("after kill -9 and restart", 2, 4, 5, 6, 7)
	})
	t.Run("failures", func(t *testing.T) {
		d := startDoorman(t, map[string]string{"DOORMAN_MAX_TRACKED": "4", "DOORMAN_MAX_FAILURES": "3", "DOORMAN_LOG_LEVEL": "warn"})
		ip := func(i int) string { return fmt.Sprintf("198.51.100.%d", i) }
		failures := func(i int) string {
			t.Helper()
			code, body := d.API(t, "GET", "/v1/decide?ip="+ip(i), nil)
			if code != 200 {
				t.Fatalf("decide %s: %d %s", ip(i), code, body)
			}
			_, after, _ := strings.Cut(string(body), `"failures":`)
			n, _, _ := strings.Cut(after, "}")
			return n
		}
		fail := func(i int) {
			t.Helper()
			if code, body := d.API(t, "POST", "/v1/failures", map[string]string{"ip": ip(i)}); code != 200 {
				t.Fatalf("failure of %s: %d %s", ip(i), code, body)
			}
		}
		for i := 1; i <= 4; i++ {
			fail(i)
		}
		fail(1) // 1's last failure is now the youngest
		fail(5) // evicts 2, whose last failure is the oldest
		for i, want := range map[int]string{1: "2", 2: "0", 3: "1", 4: "1", 5: "1"} {
			if got := failures(i); got != want {
				t.Errorf("failures of %s: %s, want %s", ip(i), got, want)
			}
		}
		m := scrapeMetrics(t, d)
		if m[`doorman_evictions_total{table="failures"}`] != 1 || m["doorman_failures_tracked"] != 4 {
			t.Errorf("evictions %v, tracked %v, want 1 and 4", m[`doorman_evictions_total{table="failures"}`], m["doorman_failures_tracked"])
		}
		if log := d.Log(t); !logHasLine(log, "level=WARN", "evict", "table=failures") {
			t.Errorf("no warn line for the eviction:\n%s", log)
		}
	})
}
