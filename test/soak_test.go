package test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The soak: steady mixed traffic through a real nginx (allowed, not
// allowlisted, denylisted and banned sources, a source banned and unbanned
// through the webhook every second) with concurrent webhook traffic, then
// faults (doorman stopped with SIGSTOP beyond nginx's proxy_read_timeout,
// then with SIGTERM) under the same load.
//
// DOORMAN_SOAK sets the length of the steady part (default 60s; the full run
// is DOORMAN_SOAK=10m): go -C test test . -run Soak -v -timeout 30m.

// scrapeMetrics reads doorman's /metrics into a map from series (name with
// labels, as printed) to value.
func scrapeMetrics(t *testing.T, d *Doorman) map[string]float64 {
	t.Helper()
	code, body := d.API(t, "GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("GET /metrics: status %d", code)
	}
	return parseMetrics(string(body))
}

func parseMetrics(s string) map[string]float64 {
	m := map[string]float64{}
	for _, line := range strings.Split(s, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

// soakSample is one measurement of the doorman process.
type soakSample struct {
	at         time.Duration
	rss        float64 // process_resident_memory_bytes
	goroutines float64 // go_goroutines
	fds        int     // entries in /proc/PID/fd
}

// soakCounts are the outcomes of the soak's requests.
type soakCounts struct {
	byKey      map[string]int // "source-kind status" -> count
	unexpected []string
	bypasses   int
	fault503   int
	fault503At time.Duration   // the slowest 503 during a fault
	lat        []time.Duration // through nginx, steady state
}

// soakStats collects soakCounts; safe for concurrent use.
type soakStats struct {
	mu sync.Mutex
	soakCounts
}

func (s *soakStats) add(key string, lat time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byKey[key]++
	if lat > 0 && len(s.lat) < 2_000_000 {
		s.lat = append(s.lat, lat)
	}
}

func (s *soakStats) bad(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unexpected = append(s.unexpected, msg)
}

func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("DOORMAN_SOAK")
	if v == "" {
		return 60 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 10*time.Second {
		t.Fatalf("DOORMAN_SOAK=%q: want a duration of at least 10s", v)
	}
	return d
}

func TestSoak(t *testing.T) {
	if testing.Short() && os.Getenv("DOORMAN_SOAK") == "" {
		t.Skip("runs for a minute")
	}
	steady := soakDuration(t)
	s := startSiteFreePort(t, map[string]string{
		"DOORMAN_ALLOW": "127.0.0.0/25", "DOORMAN_DENY": "127.0.0.66", "DOORMAN_API_TOKEN": "soak-token",
		"DOORMAN_MAX_FAILURES": "3", "DOORMAN_BAN_TIME": "5s", "DOORMAN_BAN_FACTOR": "1", "DOORMAN_LOG_LEVEL": "warn",
	})
	d := s.d
	if code, body := d.API(t, "POST", "/v1/bans", map[string]string{"ip": "127.0.0.60", "duration": "24h"}); code != 201 {
		t.Fatalf("manual ban: %d %s", code, body)
	}
	admin := s.n.URL("/admin/")
	stats := &soakStats{soakCounts: soakCounts{byKey: map[string]int{}}}
	var faulty atomic.Bool // a fault is being injected or recovered from
	done := make(chan struct{})
	var wg sync.WaitGroup

	// nginx traffic: one goroutine per source, ~200 requests/s each, a new
	// connection every 500 requests.
	type source struct {
		ip, kind string
		status   int
		page     string
	}
	sources := []source{
		{"127.0.0.10", "allowed", 200, protectedBody},
		{"127.0.0.11", "allowed", 200, protectedBody},
		{"127.0.0.12", "allowed", 200, protectedBody},
		{"127.0.0.200", "not-allowlisted", 403, page403},
		{"127.0.0.201", "not-allowlisted", 403, page403},
		{"127.0.0.66", "denylisted", 403, page403},
		{"127.0.0.60", "banned", 403, page403},
	}
	nginxGet := func(c *http.Client, url string) (int, string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	for _, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clientFrom(src.ip)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for n := 1; ; n++ {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				if n%500 == 0 {
					c.CloseIdleConnections()
					c = clientFrom(src.ip)
				}
				fault := faulty.Load()
				start := time.Now()
				status, body, err := nginxGet(c, admin)
				lat := time.Since(start)
				fault = fault || faulty.Load()
				if status == 200 && strings.Contains(body, protectedBody) && src.kind != "allowed" {
					stats.mu.Lock()
					stats.bypasses++
					stats.mu.Unlock()
				}
				switch {
				case err == nil && status == src.status && strings.Contains(body, src.page):
					if fault {
						lat = 0 // latency is measured in steady state only
					}
					stats.add(src.kind+" "+strconv.Itoa(status), lat)
				case fault && err == nil && status == 503 && strings.Contains(body, page503):
					stats.add(src.kind+" 503 (fault)", 0)
					stats.mu.Lock()
					stats.fault503++
					stats.fault503At = max(stats.fault503At, lat)
					stats.mu.Unlock()
				default:
					stats.bad(fmt.Sprintf("%s %s: status %d err %v body %.80q (fault=%v)", src.kind, src.ip, status, err, body, fault))
				}
			}
		}()
	}

	// Webhook traffic: failures and successes for a pool of 2,000
	// addresses (bans of 5 s come and go), manual bans and unbans, listings.
	api := httpClientFor(d.APIAddr)
	apiDo := func(method, path, body string) (int, string, error) {
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, "http://doorman"+path, r)
		req.Header.Set("Authorization", "Bearer soak-token")
		req.Header.Set("Content-Type", "application/json")
		resp, err := api.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	webhook := func(kind, method, path, body string, want int) {
		fault := faulty.Load()
		code, b, err := apiDo(method, path, body)
		if err == nil && code == want {
			stats.add("webhook "+kind+" "+strconv.Itoa(code), 0)
		} else if fault || faulty.Load() {
			stats.add("webhook "+kind+" error (fault)", 0)
		} else {
			stats.bad(fmt.Sprintf("webhook %s %s %s: status %d err %v body %.120q", kind, method, path, code, err, b))
		}
	}
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				i := rng.IntN(2000)
				ip := fmt.Sprintf("10.50.%d.%d", i>>8, i&255)
				switch {
				case n%200 == 199 && w == 0:
					webhook("list", "GET", "/v1/bans", "", 200)
				case n%100 == 98:
					mip := fmt.Sprintf("10.51.%d.%d", w, n/100%256)
					webhook("manual ban", "POST", "/v1/bans", `{"ip":"`+mip+`","duration":"1h","reason":"soak"}`, 201)
					webhook("unban", "DELETE", "/v1/bans/"+mip, "", 204)
				case n%50 == 49:
					webhook("success", "POST", "/v1/successes", `{"ip":"`+ip+`"}`, 200)
				default:
					webhook("failure", "POST", "/v1/failures", `{"ip":"`+ip+`","username":"admin"}`, 200)
				}
			}
		}()
	}

	// A source banned by the webhook and unbanned, every second: the ban is
	// in force for the very next request through nginx.
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := clientFrom("127.0.0.70")
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if faulty.Load() {
				continue
			}
			ok := true
			for f := 0; f < 3 && ok; f++ {
				code, _, err := apiDo("POST", "/v1/failures", `{"ip":"127.0.0.70"}`)
				ok = err == nil && code == 200
			}
			status, body, err := nginxGet(c, admin)
			if faulty.Load() {
				continue
			}
			if !ok || err != nil || status != 403 || !strings.Contains(body, page403) {
				stats.bad(fmt.Sprintf("127.0.0.70 after 3 failures: webhook ok=%v, status %d err %v", ok, status, err))
			}
			code, _, err := apiDo("DELETE", "/v1/bans/127.0.0.70", "")
			status, body, err2 := nginxGet(c, admin)
			if faulty.Load() {
				continue
			}
			if err != nil || code != 204 || err2 != nil || status != 200 || !strings.Contains(body, protectedBody) {
				stats.bad(fmt.Sprintf("127.0.0.70 after unban: DELETE %d (%v), then status %d (%v)", code, err, status, err2))
			} else {
				stats.add("ban-unban cycle", 0)
			}
		}
	}()

	// An idle keep-alive connection to the decision port, as nginx keeps
	// them: still usable after longer than nginx's keepalive_timeout (50s).
	idleConn := newDecider(t, d.DecideAddr)
	if r := idleConn.reason(t, "127.0.0.10"); r != "allowed" {
		t.Fatalf("idle connection, first request: %s", r)
	}
	idleOpened := time.Now()

	// Measure while the steady load runs.
	pid := d.Cmd.Process.Pid
	every := max(steady/30, time.Second)
	var samples []soakSample
	began := time.Now()
	idleChecked := ""
	for time.Since(began) < steady {
		time.Sleep(every)
		m := scrapeMetrics(t, d)
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		samples = append(samples, soakSample{time.Since(began), m["process_resident_memory_bytes"], m["go_goroutines"], len(fds)})
		if idleChecked == "" && time.Since(idleOpened) > 55*time.Second {
			idleChecked = idleConn.reasonErr("127.0.0.10")
		}
	}
	steadyStats := stats.snapshot()

	// Faults under load. SIGSTOP: doorman accepts but does not answer;
	// nginx gives up after proxy_read_timeout and answers 503.
	faulty.Store(true)
	proc := d.Cmd.Process
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // longer than proxy_read_timeout (2s)
	if err := proc.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, clientFrom("127.0.0.13"), admin, 200)
	time.Sleep(time.Second) // requests started during the stop finish flagged
	faulty.Store(false)
	time.Sleep(2 * time.Second)
	// SIGTERM: doorman is gone; then restarted with its state file.
	faulty.Store(true)
	d.Stop(t)
	time.Sleep(2 * time.Second)
	d.Restart(t)
	waitStatus(t, clientFrom("127.0.0.13"), admin, 200)
	time.Sleep(time.Second)
	faulty.Store(false)
	time.Sleep(2 * time.Second)
	close(done)
	wg.Wait()

	// Report.
	final := stats.snapshot()
	total := 0
	keys := make([]string, 0, len(final.byKey))
	for k, v := range final.byKey {
		keys = append(keys, k)
		total += v
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n    %-40s %d", k, final.byKey[k])
	}
	nginxSteady := 0
	for k, v := range steadyStats.byKey {
		if !strings.HasPrefix(k, "webhook") && !strings.HasPrefix(k, "ban-unban") {
			nginxSteady += v
		}
	}
	t.Logf("soak: %v steady + faults; %d requests in all, %d through nginx in the steady part (%.0f/s); outcomes:%s",
		steady, total, nginxSteady, float64(nginxSteady)/steady.Seconds(), b.String())
	lat := steadyStats.lat
	slices.Sort(lat)
	if len(lat) > 0 {
		t.Logf("latency through nginx, steady part: p50 %v, p99 %v, max %v",
			lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
	}
	if len(final.unexpected) > 0 {
		t.Errorf("%d unexpected outcomes; first: %s", len(final.unexpected), strings.Join(final.unexpected[:min(10, len(final.unexpected))], "\n  "))
	}
	if final.bypasses > 0 {
		t.Errorf("BYPASS: denied sources got the protected page %d times", final.bypasses)
	}
	if final.fault503 == 0 {
		t.Errorf("no 503 seen while doorman was stopped")
	} else {
		t.Logf("faults (SIGSTOP for 3s, then SIGTERM and restart): %d answers were nginx's 503 page, the slowest after %v",
			final.fault503, final.fault503At.Round(time.Millisecond))
	}
	// proxy_read_timeout is 2s: a stopped doorman must not hold requests longer.
	if final.fault503At > 4*time.Second {
		t.Errorf("a 503 took %v, want about proxy_read_timeout (2s)", final.fault503At)
	}
	if final.byKey["ban-unban cycle"] < int(steady/time.Second)/2 {
		t.Errorf("%d ban-unban cycles, want about one a second", final.byKey["ban-unban cycle"])
	}
	switch {
	case steady < 60*time.Second:
	case idleChecked != "allowed":
		t.Errorf("idle keep-alive connection after 55s: %s, want it still answering (allowed)", idleChecked)
	default:
		t.Logf("an idle keep-alive connection to the decision port still answered after 55s")
	}
	checkFlat(t, samples, steady)
}

// startSiteFreePort is startSite with doorman's decision listener on a free
// port instead of the shipped 127.0.0.1:9180, so that a long run does not
// hold the fixed-port lock: the shipped doorman-upstream.conf is inlined
// into site.conf.example with only its server address changed.
func startSiteFreePort(t *testing.T, env map[string]string) *site {
	t.Helper()
	requireTool(t, "nginx", "nginx")
	app := testApp(t)
	d := startDoorman(t, env)
	root := repoRoot(t)
	example, err := os.ReadFile(filepath.Join(root, "nginx", "site.conf.example"))
	if err != nil {
		t.Fatal(err)
	}
	upstream, err := os.ReadFile(filepath.Join(root, "nginx", "doorman-upstream.conf"))
	if err != nil {
		t.Fatal(err)
	}
	up := replaceAll(t, string(upstream), []string{"server 127.0.0.1:9180;", "server " + d.DecideAddr + ";"})
	n := startNginxHTTP(t, func(dir string, port int) string {
		return replaceAll(t, string(example), []string{
			"include doorman/doorman-upstream.conf;", up,
			"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port),
			"server 127.0.0.1:8000;", "server " + app.Listener.Addr().String() + ";",
			"/etc/nginx/doorman/", dir + "/doorman/",
			"/var/log/nginx/app.access.log", dir + "/site.access.log",
		})
	})
	return &site{d: d, n: n, app: app}
}

// reasonErr is reason without failing: the reason, or the error.
func (dc *decider) reasonErr(ip string) string {
	dc.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := dc.c.Write([]byte(decideHead(ip) + "\r\n")); err != nil {
		return err.Error()
	}
	r, err := readRawResponse(dc.br)
	if err != nil {
		return err.Error()
	}
	return r.header.Get("X-Doorman-Reason")
}

func (s *soakStats) snapshot() soakCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := soakCounts{byKey: map[string]int{}, unexpected: slices.Clone(s.unexpected), bypasses: s.bypasses,
		fault503: s.fault503, fault503At: s.fault503At, lat: slices.Clone(s.lat)}
	for k, v := range s.byKey {
		c.byKey[k] = v
	}
	return c
}

// checkFlat checks that RSS, goroutines and descriptors do not grow after
// the warm-up (two minutes, or the first third of a shorter run): the mean
// of the last quarter of the samples against the first quarter.
func checkFlat(t *testing.T, samples []soakSample, steady time.Duration) {
	t.Helper()
	warm := min(2*time.Minute, steady/3)
	var after []soakSample
	for _, s := range samples {
		if s.at >= warm {
			after = append(after, s)
		}
	}
	if len(after) < 8 {
		t.Fatalf("%d samples after the warm-up, want at least 8", len(after))
	}
	q := len(after) / 4
	mean := func(ss []soakSample, f func(soakSample) float64) float64 {
		sum := 0.0
		for _, s := range ss {
			sum += f(s)
		}
		return sum / float64(len(ss))
	}
	span := func(f func(soakSample) float64) (lo, hi float64) {
		lo, hi = f(after[0]), f(after[0])
		for _, s := range after {
			lo, hi = min(lo, f(s)), max(hi, f(s))
		}
		return lo, hi
	}
	for _, m := range []struct {
		name  string
		f     func(soakSample) float64
		slack float64 // growth allowed from the first quarter's mean to the last's
		unit  float64
		fmt   string
	}{
		{"RSS", func(s soakSample) float64 { return s.rss }, 8 << 20, 1 << 20, "%.1f MiB"},
		{"goroutines", func(s soakSample) float64 { return s.goroutines }, 16, 1, "%.0f"},
		{"open fds", func(s soakSample) float64 { return float64(s.fds) }, 16, 1, "%.0f"},
	} {
		first, last := mean(after[:q], m.f), mean(after[len(after)-q:], m.f)
		lo, hi := span(m.f)
		f := func(v float64) string { return fmt.Sprintf(m.fmt, v/m.unit) }
		t.Logf("%s from %v to %v (%d samples): min %s, max %s; first-quarter mean %s, last-quarter mean %s",
			m.name, warm.Round(time.Second), steady, len(after), f(lo), f(hi), f(first), f(last))
		if last-first > m.slack {
			t.Errorf("%s grew from %s to %s after the warm-up (allowed: %s)", m.name, f(first), f(last), f(m.slack))
		}
	}
}
