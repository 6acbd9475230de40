package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/testproc"
	bolt "go.etcd.io/bbolt"
)

// No data lost: kill -9 in the middle of a storm of failures, expired bans
// after a crash, and damaged state files.

// stormAddr is the i-th address of the storm: 10.77.0.0/16.
func stormAddr(i int) string { return fmt.Sprintf("10.77.%d.%d", i>>8&255, i&255) }

type banList struct {
	Bans []struct {
		Key    string `json:"key"`
		Until  string `json:"until"`
		Reason string `json:"reason"`
		Count  int    `json:"count"`
	} `json:"bans"`
}

// listBans returns GET /v1/bans as key -> until.
func listBans(t *testing.T, d *Doorman) (map[string]string, banList) {
	t.Helper()
	code, body := d.API(t, "GET", "/v1/bans", nil)
	if code != 200 {
		t.Fatalf("GET /v1/bans: status %d %s", code, body)
	}
	var bl banList
	if err := json.Unmarshal(body, &bl); err != nil {
		t.Fatalf("GET /v1/bans: %v", err)
	}
	m := map[string]string{}
	for _, b := range bl.Bans {
		m[b.Key] = b.Until
	}
	return m, bl
}

// decider sends decision requests as nginx would (from 127.0.0.1, which is
// trusted by default) on one kept-alive connection.
type decider struct {
	c  net.Conn
	br *bufio.Reader
}

func newDecider(t *testing.T, addr string) *decider {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &decider{c: c, br: bufio.NewReader(c)}
}

// reason returns the X-Doorman-Reason for ip.
func (dc *decider) reason(t *testing.T, ip string) string {
	t.Helper()
	dc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := dc.c.Write([]byte(decideHead(ip) + "\r\n")); err != nil {
		t.Fatal(err)
	}
	r, err := readRawResponse(dc.br)
	if err != nil {
		t.Fatal(err)
	}
	return r.header.Get("X-Doorman-Reason")
}

// stormAck is a ban the API acknowledged: the failure's answer said banned.
type stormAck struct{ ip, key, until string }

// failureStorm posts two failures for each address from index from on, with
// workers concurrent clients, until to is reached or doorman is gone. When
// killAfter > 0 it kills doorman with SIGKILL as the killAfter-th ban is
// acknowledged, while the other workers' requests are in flight. It returns
// the acknowledged bans, the index after the last address handed out, the
// failures sent and the requests that failed. An address whose two failures
// were both answered without a ban (DOORMAN_MAX_FAILURES=2) is an error.
func failureStorm(t *testing.T, d *Doorman, from, to, workers, killAfter int) (acked []stormAck, next int, sent, failed int64) {
	t.Helper()
	var (
		mu     sync.Mutex
		nAcked atomic.Int64
		nSent  atomic.Int64
		nErr   atomic.Int64
		missed []string // addresses whose two answered failures made no ban
		killed atomic.Bool
		proc   = d.Cmd.Process
		jobs   = make(chan int)
		wg     sync.WaitGroup
		client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: workers,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dl net.Dialer
				return dl.DialContext(ctx, "tcp", d.APIAddr)
			},
		}}
	)
	defer client.CloseIdleConnections()
	token := d.Env["DOORMAN_API_TOKEN"]
	post := func(ip string) (stormAck, bool, error) {
		req, _ := http.NewRequest("POST", "http://doorman/v1/failures", strings.NewReader(`{"ip":"`+ip+`","username":"admin"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		nSent.Add(1)
		resp, err := client.Do(req)
		if err != nil {
			return stormAck{}, false, err
		}
		defer resp.Body.Close()
		var out struct {
			Key    string `json:"key"`
			Banned bool   `json:"banned"`
			Until  string `json:"until"`
		}
		if resp.StatusCode != 200 {
			return stormAck{}, false, fmt.Errorf("status %d", resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return stormAck{}, false, err
		}
		return stormAck{ip, out.Key, out.Until}, out.Banned, nil
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				answered, anyBan := 0, false
				for f := 0; f < 2; f++ {
					a, banned, err := post(stormAddr(i))
					if err != nil {
						nErr.Add(1)
						break
					}
					answered++
					if !banned {
						continue
					}
					anyBan = true
					mu.Lock()
					acked = append(acked, a)
					mu.Unlock()
					if nAcked.Add(1) == int64(killAfter) {
						proc.Kill()
						killed.Store(true)
					}
				}
				if answered == 2 && !anyBan {
					mu.Lock()
					missed = append(missed, stormAddr(i))
					mu.Unlock()
				}
			}
		}()
	}
	for next = from; next < to && !killed.Load() && nErr.Load() == 0; next++ {
		jobs <- next
	}
	close(jobs)
	wg.Wait()
	if killAfter > 0 && !killed.Load() {
		t.Fatalf("the storm ended before %d bans were acknowledged (%d acknowledged, %d errors)", killAfter, nAcked.Load(), nErr.Load())
	}
	if killAfter == 0 && nErr.Load() > 0 {
		t.Fatalf("%d failures failed without a kill", nErr.Load())
	}
	if len(missed) > 0 {
		t.Errorf("%d addresses got two failures answered without a ban, e.g. %s", len(missed), missed[0])
	}
	return acked, next, nSent.Load(), nErr.Load()
}

// checkAcked checks that every acknowledged ban is listed and denies its
// address. Listed means under its key with the same end or, when unit bans
// in its range escalated to a range ban that folded it (or the failure was
// answered from a range ban, DOORMAN_RANGE_THRESHOLD), covered by a listed
// range ending no earlier. It returns how many bans are listed.
func checkAcked(t *testing.T, d *Doorman, acked []stormAck) int {
	t.Helper()
	got, _ := listBans(t, d)
	type listedRange struct {
		key   netip.Prefix
		until time.Time
	}
	var ranges []listedRange
	for k, u := range got {
		p, err1 := netip.ParsePrefix(k)
		until, err2 := time.Parse(time.RFC3339, u)
		if err1 != nil || err2 != nil {
			t.Fatalf("GET /v1/bans: key %q until %q", k, u)
		}
		if p.Bits() < p.Addr().BitLen() {
			ranges = append(ranges, listedRange{p, until})
		}
	}
	covered := func(a stormAck) bool {
		ip := netip.MustParseAddr(a.ip)
		until, err := time.Parse(time.RFC3339, a.until)
		if err != nil {
			t.Fatalf("acknowledged ban %s: until %q", a.key, a.until)
		}
		for _, r := range ranges {
			if r.key.Contains(ip) && !r.until.Before(until) {
				return true
			}
		}
		return false
	}
	missing := 0
	for _, a := range acked {
		if until, ok := got[a.key]; (!ok || until != a.until) && !covered(a) {
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged ban %s of %s (until %s) after restart: listed=%v until=%q, and no listed range covers it until then", a.key, a.ip, a.until, ok, until)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged bans lost", missing, len(acked))
	}
	dc := newDecider(t, d.DecideAddr)
	allowed := 0
	for _, a := range acked {
		if r := dc.reason(t, a.ip); r != "banned" {
			allowed++
			if allowed <= 5 {
				t.Errorf("decision for acknowledged ban %s after restart: %s, want banned", a.ip, r)
			}
		}
	}
	if allowed > 0 {
		t.Errorf("%d of %d acknowledged bans not in force", allowed, len(acked))
	}
	return len(got)
}

// Three kill -9s in the middle of a storm of failures over 10,000
// addresses, each with two failures (DOORMAN_MAX_FAILURES=2), then the rest
// of the storm: every acknowledged ban is there after each restart, with the
// same end, and denies its address; so is a manual IPv6 range ban made
// before the storm. A ban that ran out before the kills, while still in the
// state file, does not come back. Range bans are off, as everywhere in the
// harness unless a test turns them on; with them on, the storm's addresses
// fill /24s, a failure answered "banned" from a range ban is acknowledged
// too, and checkAcked accepts a unit ban folded into a listed range.
func TestCrashKill9DuringFailureStorm(t *testing.T) { crashStorm(t, "0") }

// The same storm with range bans at the default threshold: failures answered
// "banned" by a range ban are acknowledged bans too.
func TestCrashKill9DuringFailureStormRangeBans(t *testing.T) { crashStorm(t, "4") }

func crashStorm(t *testing.T, rangeThreshold string) {
	const (
		addrs   = 10000
		workers = 16
		kills   = 3
		expired = "192.0.2.1" // outside the storm's 10.77.0.0/16
	)
	d := startDoorman(t, map[string]string{
		"DOORMAN_MAX_FAILURES": "2", "DOORMAN_API_TOKEN": "crash-token", "DOORMAN_LOG_LEVEL": "warn",
		"DOORMAN_RANGE_THRESHOLD": rangeThreshold,
	})
	rng := rand.New(rand.NewPCG(7, 7))
	var all []stormAck

	// A manual range ban, acknowledged like the storm's and checked with them.
	code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": "2001:db8::/48", "duration": "2h"})
	var rangeBan struct{ Key, Until string }
	if err := json.Unmarshal(body, &rangeBan); code != 201 || err != nil || rangeBan.Key != "2001:db8::/48" {
		t.Fatalf("manual ban of 2001:db8::/48: %d %s", code, body)
	}
	checkAll := func() int {
		t.Helper()
		return checkAcked(t, d, append([]stormAck{{"2001:db8:0:ffff::1", rangeBan.Key, rangeBan.Until}}, all...))
	}

	// A 1 s ban that runs out while doorman runs; its record stays in the
	// state file (for escalation) through every kill.
	if code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": expired, "duration": "1s"}); code != 201 {
		t.Fatalf("1 s ban of %s: %d %s", expired, code, body)
	}
	dc := newDecider(t, d.DecideAddr)
	for deadline := time.Now().Add(5 * time.Second); dc.reason(t, expired) != "allowed"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the 1 s ban of %s still in force after 5 s", expired)
		}
	}
	checkExpired := func(when string) {
		t.Helper()
		if got, _ := listBans(t, d); got[expired+"/32"] != "" {
			t.Errorf("%s: the expired ban of %s is listed again (until %s)", when, expired, got[expired+"/32"])
		}
		if r := newDecider(t, d.DecideAddr).reason(t, expired); r != "allowed" {
			t.Errorf("%s: %s is %s, want allowed (its ban ran out before the kill)", when, expired, r)
		}
	}

	next := 0
	var sent, failed int64
	start := time.Now()
	for k := 1; k <= kills+1; k++ {
		killAfter := 0
		if k <= kills {
			// Kill at a point that is not a round number of anything.
			killAfter = addrs/(2*kills) + rng.IntN(addrs/(2*kills))
		}
		acked, n, s, f := failureStorm(t, d, next, addrs, workers, killAfter)
		all, next, sent, failed = append(all, acked...), n, sent+s, failed+f
		if k > kills {
			break
		}
		d.Kill(t) // reap
		d.Restart(t)
		listed := checkAll()
		checkExpired(fmt.Sprintf("after kill -9 #%d", k))
		t.Logf("kill -9 #%d after %d more acknowledged bans (%d in flight failed): %d acknowledged so far checked after restart (%d listed)",
			k, len(acked), f, len(all), listed)
	}
	listed := checkAll()
	checkExpired("at the end")
	t.Logf("storm over %d addresses: %d failures sent by %d workers in %v, %d kill -9, %d requests failed with the kills; "+
		"%d bans acknowledged, checked at the end (%d listed)",
		addrs, sent, workers, time.Since(start).Round(time.Millisecond), kills, failed, len(all), listed)
	banned := map[string]bool{}
	for _, a := range all {
		banned[a.ip] = true
	}
	if len(banned) < addrs-kills*2*workers {
		t.Errorf("only %d of %d addresses banned", len(banned), addrs)
	}
}

// Unit bans that run out while doorman is down stay out after a restart, and
// their records still count for escalation. Range bans are off
// (DOORMAN_RANGE_THRESHOLD=0): the 200 addresses share a /24, and each must
// get a ban record of its own.
func TestCrashExpiredBansNotResurrected(t *testing.T) {
	d := startDoorman(t, map[string]string{
		"DOORMAN_MAX_FAILURES": "2", "DOORMAN_BAN_TIME": "2s", "DOORMAN_API_TOKEN": "crash-token", "DOORMAN_LOG_LEVEL": "warn",
		"DOORMAN_RANGE_THRESHOLD": "0",
	})
	const n = 200
	var latest time.Time
	for i := 0; i < n; i++ {
		for f := 0; f < 2; f++ {
			code, body := d.API(t, "POST", "/v1/failures", map[string]string{"ip": stormAddr(i)})
			if code != 200 {
				t.Fatalf("failure: %d %s", code, body)
			}
			var out struct {
				Banned bool   `json:"banned"`
				Until  string `json:"until"`
			}
			json.Unmarshal(body, &out)
			if f == 1 {
				u, err := time.Parse(time.RFC3339, out.Until)
				if !out.Banned || err != nil {
					t.Fatalf("second failure of %s: %s, want a ban", stormAddr(i), body)
				}
				latest = u
			}
		}
	}
	// One long ban that must survive.
	if code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": "10.78.0.1", "duration": "1h"}); code != 201 {
		t.Fatalf("manual ban: %d %s", code, body)
	}
	d.Kill(t)
	// until is printed to the second (rounded down): wait past it.
	for time.Now().Before(latest.Add(time.Second)) {
		time.Sleep(50 * time.Millisecond)
	}
	d.Restart(t)
	got, _ := listBans(t, d)
	if len(got) != 1 || got["10.78.0.1/32"] == "" {
		t.Errorf("bans after restart: %v, want only the 1h ban of 10.78.0.1", got)
	}
	dc := newDecider(t, d.DecideAddr)
	resurrected := 0
	for i := 0; i < n; i++ {
		if r := dc.reason(t, stormAddr(i)); r != "allowed" {
			resurrected++
		}
	}
	if resurrected > 0 {
		t.Errorf("%d of %d expired bans denied after restart", resurrected, n)
	}
	if r := dc.reason(t, "10.78.0.1"); r != "banned" {
		t.Errorf("the 1h ban after restart: %s, want banned", r)
	}
	if m := scrapeMetrics(t, d); m["doorman_bans_active"] != 1 {
		t.Errorf("doorman_bans_active %v, want 1", m["doorman_bans_active"])
	}
	// The expired records were kept for escalation: the next ban is the second.
	for f := 0; f < 2; f++ {
		d.API(t, "POST", "/v1/failures", map[string]string{"ip": stormAddr(0)})
	}
	_, bl := listBans(t, d)
	for _, b := range bl.Bans {
		if b.Key == stormAddr(0)+"/32" && b.Count != 2 {
			t.Errorf("re-ban of %s after restart: count %d, want 2 (the expired ban remembered)", stormAddr(0), b.Count)
		}
	}
	t.Logf("%d expired bans across kill -9 and restart: 0 resurrected, ban counts kept", n)
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// goodStateFiles returns the bytes of a state file holding 100 bans, written
// by a real doorman: as the bans left it, and after one more restart, which
// commits two transactions without new records, so that both of bbolt's
// meta pages describe all 100 bans.
func goodStateFiles(t *testing.T) (afterBans, afterRestart []byte) {
	t.Helper()
	d := startDoorman(t, map[string]string{"DOORMAN_LOG_LEVEL": "warn"})
	for i := 0; i < 100; i++ {
		if code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": stormAddr(i), "duration": "1h", "reason": "fixture"}); code != 201 {
			t.Fatalf("ban: %d %s", code, body)
		}
	}
	d.Stop(t)
	afterBans, err := os.ReadFile(d.Env["DOORMAN_STATE_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	d.Restart(t)
	d.Stop(t)
	afterRestart, err = os.ReadFile(d.Env["DOORMAN_STATE_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	return afterBans, afterRestart
}

// runUntilExit runs doorman with env, both listeners on 127.0.0.1:0 unless
// env says otherwise, and returns its exit code and output, or fails when it
// is still running after timeout. See testproc.RunDoorman.
func runUntilExit(t *testing.T, env map[string]string, timeout time.Duration) (int, string) {
	t.Helper()
	e := map[string]string{"DOORMAN_DECIDE_ADDR": "127.0.0.1:0", "DOORMAN_API_ADDR": "127.0.0.1:0"}
	for k, v := range env {
		e[k] = v
	}
	code, out, err := testproc.RunDoorman([]string{doormanBinary(t)}, t.TempDir(), e, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return code, out
}

func TestCrashDamagedStateFile(t *testing.T) {
	good, restarted := goodStateFiles(t)
	if len(good) < 4*4096 {
		t.Fatalf("state file of %d bytes, want at least 4 pages", len(good))
	}
	inUse := pagesInUse(t, good)
	t.Logf("state file with 100 bans: %d bytes, %d of them in pages in use", len(good), inUse)
	rng := rand.New(rand.NewPCG(42, 42))
	garbage := make([]byte, len(good))
	for i := range garbage {
		garbage[i] = byte(rng.IntN(256))
	}
	flip := func(good []byte, from, to int) []byte {
		b := bytes.Clone(good)
		for i := from; i < to && i < len(b); i++ {
			b[i] ^= 0xA5
		}
		return b
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"truncated to half", good[:len(good)/2]},
		{"truncated to one page", good[:4096]},
		{"last page in use cut off", good[:inUse-4096]},
		{"last page in use cut short by one byte", good[:inUse-1]},
		{"truncated to 100 bytes", good[:100]},
		{"random bytes", garbage},
		{"text", []byte("this is not a doorman state file\n")},
		{"both meta pages wiped", flip(good, 0, 2*4096)},
		{"data pages flipped", flip(good, 2*4096, len(good))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.db")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			before := fileSum(t, path)

			code, out := runUntilExit(t, map[string]string{"DOORMAN_STATE_FILE": path}, 15*time.Second)
			if code == 0 || !strings.Contains(out, path) || !strings.Contains(out, "DOORMAN_STATE_RESET") {
				t.Errorf("start on a damaged file: exit %d, output %q; want a refusal naming %s and DOORMAN_STATE_RESET", code, out, path)
			}
			if strings.Contains(out, "goroutine ") || strings.Contains(out, "fatal error") {
				t.Errorf("doorman crashed instead of refusing:\n%s", out)
			}
			if fileSum(t, path) != before {
				t.Errorf("the damaged file was modified by the refused start")
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("files next to the state file after a refused start: %v, want only state.db", entries)
			}
			t.Logf("refused: exit %d: %s", code, strings.TrimSpace(out))

			// DOORMAN_STATE_RESET=true: start empty, the bad file moved aside intact.
			d := startDoorman(t, map[string]string{"DOORMAN_STATE_FILE": path, "DOORMAN_STATE_RESET": "true"})
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("files moved aside: %v, want one %s.corrupt-*", aside, path)
			}
			if fileSum(t, aside[0]) != before {
				t.Errorf("%s differs from the damaged file", aside[0])
			}
			if !strings.Contains(d.Log(t), aside[0]) {
				t.Errorf("the log does not name %s:\n%s", aside[0], d.Log(t))
			}
			if got, _ := listBans(t, d); len(got) != 0 {
				t.Errorf("bans after a reset: %d, want none", len(got))
			}
			// The fresh file works: a ban survives a restart.
			if code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": "10.79.0.1", "duration": "1h"}); code != 201 {
				t.Fatalf("ban after reset: %d %s", code, body)
			}
			d.Kill(t)
			d.Restart(t)
			if got, _ := listBans(t, d); len(got) != 1 {
				t.Errorf("bans after reset, ban and kill -9: %v, want the one", got)
			}
			if aside2, _ := filepath.Glob(path + ".corrupt-*"); len(aside2) != 1 {
				t.Errorf("a healthy restart moved files aside: %v", aside2)
			}
		})
	}

	// Damage that loses no ban: bbolt keeps two meta pages and reads the
	// other when one is damaged (both describe all 100 bans here), and the
	// file's tail past the pages in use holds nothing. The undamaged file is
	// the control.
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"undamaged", restarted},
		{"first meta page wiped", flip(restarted, 0, 4096)},
		{"second meta page wiped", flip(restarted, 4096, 2*4096)},
		{"unused tail cut off", good[:inUse]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			d := startDoorman(t, map[string]string{"DOORMAN_STATE_FILE": path})
			if got, _ := listBans(t, d); len(got) != 100 {
				t.Errorf("bans loaded: %d, want 100", len(got))
			}
			if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 0 {
				t.Errorf("moved aside: %v", aside)
			}
		})
	}
}

// pagesInUse returns how many bytes of a bbolt file its pages in use span
// (its high-water mark); a file shorter than that has lost data.
func pagesInUse(t *testing.T, data []byte) int {
	t.Helper()
	path := filepath.Join(t.TempDir(), "probe.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	if n <= 2*4096 || n > int64(len(data)) {
		t.Fatalf("pages in use span %d bytes of %d", n, len(data))
	}
	return int(n)
}
