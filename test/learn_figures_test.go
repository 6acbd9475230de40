package test

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// loginApp answers like a login form: POST with password=right is 302,
// any other POST 200 (the form again), GET 200. WordPress's wp-login.php
// and Django's admin login answer so.
func loginApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" && r.FormValue("password") == "right" {
			w.Header().Set("Location", "/")
			w.WriteHeader(http.StatusFound)
			return
		}
		io.WriteString(w, "login form\n")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// learnDoorman starts a doorman for the learn tests: the shipped
// upstream's decision address, records read from the unixgram socket sock,
// the django rule on /admin/login/, a ban after maxFailures, and extra.
func learnDoorman(t *testing.T, sock, maxFailures string, extra map[string]string) *Doorman {
	t.Helper()
	env := map[string]string{
		"DOORMAN_DECIDE_ADDR":  "127.0.0.1:9180",
		"DOORMAN_MAX_FAILURES": maxFailures,
		"DOORMAN_LEARN_ADDR":   "unixgram:" + sock,
		"DOORMAN_LEARN_RULES":  "django /admin/login/",
	}
	maps.Copy(env, extra)
	return startDoorman(t, env)
}

// learnNginx starts nginx with doorman-learn.conf at http level, a server
// guarding / with doorman (the shipped location snippet) and proxying to app.
func learnNginx(t *testing.T, sock, app string) *Nginx {
	t.Helper()
	return learnNginxOn(t, "", sock, app)
}

// learnNginxOn is learnNginx also listening on addr (when not empty).
func learnNginxOn(t *testing.T, addr, sock, app string) *Nginx {
	t.Helper()
	return startNginxHTTP(t, func(dir string, port int) string {
		listen := ""
		if addr != "" {
			listen = fmt.Sprintf("listen %s:%d;", addr, port)
		}
		learn, _ := learnConf(t, dir, sock)
		return fmt.Sprintf(`include doorman/doorman-upstream.conf;
include %s;
upstream app {
    server %s;
    keepalive 16;
}
server {
    listen 127.0.0.1:%d;
    %s
    include doorman/doorman-location.conf;
    location / {
        auth_request /_doorman;
        proxy_pass http://app;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
    }
}
`, learn, app, port, listen)
	})
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// TestLearnFigures measures, through real nginx, the time from a failing
// login's answer to its ban being in force at /decide, and how often the
// client's very next request is already refused; then how many records a
// second doorman books on one core, and what each costs in CPU. Set
// DOORMAN_LEARN_FIGURES=1 for the figures of docs/benchmarks.md (more
// samples); the default run is small and checks only loose bounds.
func TestLearnFigures(t *testing.T) {
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	full := os.Getenv("DOORMAN_LEARN_FIGURES") == "1"
	samples, records := 100, 20000
	if full {
		samples, records = 1000, 200000
	}
	sock := filepath.Join(t.TempDir(), "learn.sock")
	d := learnDoorman(t, sock, "1", map[string]string{
		"DOORMAN_MAX_TRACKED": "1000000",
	})
	n := learnNginx(t, sock, loginApp(t))
	decide := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}
	banned := func(ip string) bool {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:9180/decide", nil)
		req.Header.Set("X-Real-IP", ip)
		resp, err := decide.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusForbidden
	}
	post := func(c *http.Client) {
		resp, err := c.Post(n.URL("/admin/login/"), "application/x-www-form-urlencoded", strings.NewReader("password=wrong"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("failing POST: %d, want 200", resp.StatusCode)
		}
	}
	addr := func(i int) string { return fmt.Sprintf("127.1.%d.%d", i/250, 1+i%250) }

	// Answer read → ban in force at /decide, polled in a loop.
	var lat []time.Duration
	for i := range samples {
		ip := addr(i)
		c := clientFrom(ip)
		post(c)
		start := time.Now()
		for !banned(ip) {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s not banned 5 s after its failure", ip)
			}
		}
		lat = append(lat, time.Since(start))
	}
	// The client's next request, sent at once through nginx.
	refused := 0
	for i := range samples {
		c := clientFrom(addr(samples + i))
		post(c)
		resp, err := c.Get(n.URL("/admin/"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusForbidden {
			refused++
		}
	}
	t.Logf("answer → ban in force (%d samples): p50 %v, p99 %v, max %v; next request refused in %d of %d",
		samples, percentile(lat, 0.5), percentile(lat, 0.99), slices.Max(lat), refused, samples)
	// The median is doorman's; the tail is the state file's fsync, which
	// another process's disk writes can stretch past 100 ms.
	if p50 := percentile(lat, 0.5); p50 > 10*time.Millisecond {
		t.Errorf("p50 answer → ban = %v, want under 10ms", p50)
	}

	// Ingest, on a doorman of its own with one core (GOMAXPROCS=1) and a
	// threshold no address reaches: records written to the socket as fast
	// as doorman reads them (a unix datagram sender waits while the
	// receiver's queue is full, so none is lost), each a failure of another
	// address: parse, match, count.
	sock = filepath.Join(t.TempDir(), "learn.sock")
	d = startDoorman(t, map[string]string{
		"GOMAXPROCS":           "1",
		"DOORMAN_MAX_FAILURES": "1000",
		"DOORMAN_LEARN_ADDR":   "unixgram:" + sock,
		"DOORMAN_LEARN_RULES":  "django /admin/login/",
	})
	conn, err := net.Dial("unixgram", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := learnHandled(t, d)
	cpu0 := procCPU(t, d.Cmd.Process.Pid)
	start := time.Now()
	for i := range records {
		rec := fmt.Sprintf(`<190>Dec  3 09:04:39 nginx: {"client":"198.18.%d.%d","method":"POST","status":"200","request_id":"0f3a9c1d2b4e5f60718293a4b5c6d7e8","host":"example.com","uri":"/admin/login/"}`,
			i/250%250, 1+i%250)
		if _, err := conn.Write([]byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for learnHandled(t, d) < before+records {
		if time.Now().After(deadline) {
			t.Fatalf("booked %d of %d records", learnHandled(t, d)-before, records)
		}
		time.Sleep(5 * time.Millisecond)
	}
	wall := time.Since(start)
	cpu := procCPU(t, d.Cmd.Process.Pid) - cpu0
	t.Logf("ingest: %d records in %v: %.0f records/s; doorman CPU %v: %.1f µs a record",
		records, wall.Round(time.Millisecond), float64(records)/wall.Seconds(), cpu, float64(cpu.Microseconds())/float64(records))
	if got := learnMetric(t, d, "doorman_learn_dropped_total{why=\"malformed\"}"); got != 0 {
		t.Errorf("%d records dropped as malformed", got)
	}
	if full {
		fail2banFigures(t, records)
	}
}

// procCPU is the user and system time of pid so far.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
}

// fail2banFigures feeds the same failures as nginx access-log lines to
// fail2ban-regex with a failregex in the style of nginx/fail2ban.
func fail2banFigures(t *testing.T, records int) {
	if _, err := lookTool("fail2ban-regex"); err != nil {
		t.Logf("fail2ban-regex not installed: no comparison")
		return
	}
	dir := t.TempDir()
	var b strings.Builder
	for i := range records {
		fmt.Fprintf(&b, "198.18.%d.%d - - [03/Dec/2026:09:04:39 +0000] \"POST /admin/login/ HTTP/1.1\" 200 2345 \"-\" \"Mozilla/5.0\"\n", i/250%250, 1+i%250)
	}
	logf := filepath.Join(dir, "access.log")
	os.WriteFile(logf, []byte(b.String()), 0o644)
	filter := filepath.Join(dir, "learn.conf")
	os.WriteFile(filter, []byte("[Definition]\nfailregex = ^<HOST> \\S+ \\S+ \\[[^]]*\\] \"POST /admin/login/\\S* HTTP/[0-9.]+\" 200 \n"+
		"datepattern = ^[^[]*\\[({DATE})\n    {^LN-BEG}\n"), 0o644)
	start := time.Now()
	out, err := exec.Command("fail2ban-regex", logf, filter).CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("Failregex: %d total", records)) {
		t.Fatalf("fail2ban-regex did not match every line:\n%s", out)
	}
	t.Logf("fail2ban-regex: %d lines in %v: %.0f lines/s", records, wall.Round(time.Millisecond), float64(records)/wall.Seconds())
}
