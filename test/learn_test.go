package test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// learnSocketLine is the shipped access_log line of nginx/doorman-learn.conf;
// tests point it at a socket of their own.
const learnSocketLine = "syslog:server=unix:/run/doorman/learn.sock,nohostname"

// learnConf writes nginx/doorman-learn.conf into dir with its socket moved to
// sock and returns the copy's path and the access_log line to repeat in a
// server that has its own access_log.
func learnConf(t *testing.T, dir, sock string) (path, accessLog string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "nginx", "doorman-learn.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	if strings.Count(conf, learnSocketLine) != 1 {
		t.Fatalf("nginx/doorman-learn.conf no longer contains %q once", learnSocketLine)
	}
	moved := "syslog:server=unix:" + sock + ",nohostname"
	conf = strings.ReplaceAll(conf, learnSocketLine, moved)
	path = filepath.Join(dir, "doorman-learn.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(conf, "\n") {
		if strings.HasPrefix(line, "access_log ") {
			accessLog = line
		}
	}
	if accessLog == "" {
		t.Fatal("no access_log line in nginx/doorman-learn.conf")
	}
	return path, accessLog
}

// learnMetrics reads the doorman_learn_* series from one /metrics scrape.
func learnMetrics(t *testing.T, d *Doorman) map[string]int {
	t.Helper()
	_, b, err := d.Get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if name, v, ok := strings.Cut(line, " "); ok && strings.HasPrefix(name, "doorman_learn_") {
			out[name], _ = strconv.Atoi(v)
		}
	}
	return out
}

// learnMetric reads one doorman_learn_* series from /metrics.
func learnMetric(t *testing.T, d *Doorman, name string) int {
	t.Helper()
	if v, ok := learnMetrics(t, d)[name]; ok {
		return v
	}
	return -1
}

// learnHandled is how many well-formed records doorman has booked or
// ignored, from one scrape.
func learnHandled(t *testing.T, d *Doorman) int {
	t.Helper()
	m := learnMetrics(t, d)
	return m["doorman_learn_failures_total"] + m["doorman_learn_successes_total"] + m["doorman_learn_ignored_total"] +
		m["doorman_learn_duplicates_total"]
}

// waitLearned waits until doorman has booked or ignored n learned records.
func waitLearned(t *testing.T, d *Doorman, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for learnHandled(t, d) < n {
		if time.Now().After(deadline) {
			t.Fatalf("doorman handled %d learned records, want %d: %v", learnHandled(t, d), n, learnMetrics(t, d))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// failuresOf is the failure count doorman holds for ip.
func failuresOf(t *testing.T, d *Doorman, ip string) int {
	t.Helper()
	status, b := d.API(t, "GET", "/v1/decide?ip="+ip, nil)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/decide?ip=%s: %d %s", ip, status, b)
	}
	var out struct{ Failures int }
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out.Failures
}

// learnDjangoSite is nginx/site.conf.example in front of demo, with
// doorman-learn.conf included and its access_log line repeated next to the
// site's own, as docs/learn.md says.
func learnDjangoSite(t *testing.T, sock string, demo *djangoDemo) *Nginx {
	t.Helper()
	example, err := os.ReadFile(filepath.Join(repoRoot(t), "nginx", "site.conf.example"))
	if err != nil {
		t.Fatal(err)
	}
	return startNginxHTTP(t, func(dir string, port int) string {
		learn, accessLog := learnConf(t, dir, sock)
		conf := string(example)
		for _, r := range [][2]string{
			{"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port)},
			{"server 127.0.0.1:8000;", "server " + demo.Addr + ";"},
			{"/etc/nginx/doorman/", dir + "/doorman/"},
			{"access_log /var/log/nginx/app.access.log doorman;", "access_log " + dir + "/site.access.log doorman;\n    " + accessLog},
		} {
			if !strings.Contains(conf, r[0]) {
				t.Fatalf("site.conf.example no longer contains %q", r[0])
			}
			conf = strings.ReplaceAll(conf, r[0], r[1])
		}
		return "include " + learn + ";\n" + conf
	})
}

// TestLearnAndWebhookCountOnce: the demo with doorman_django reporting to
// the webhook and nginx's records learned too; nginx passes $request_id to
// the app as X-Request-Id and in its record, so five failed logins count
// five, not ten.
func TestLearnAndWebhookCountOnce(t *testing.T) {
	requireDjango(t)
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	const token = "learn-e2e-token"
	sock := filepath.Join(t.TempDir(), "learn.sock")
	d := learnDoorman(t, sock, "10", map[string]string{
		"DOORMAN_API_TOKEN": token,
	})
	demo := startDjangoDemo(t, map[string]string{
		"DOORMAN_API_URL":         "http://" + d.APIAddr,
		"DOORMAN_API_TOKEN":       token,
		"DOORMAN_TRUSTED_PROXIES": "127.0.0.1/32",
	})
	n := learnDjangoSite(t, sock, demo)
	b := newBrowser(t, "127.0.0.40", n.URL(""))
	for i := range 5 {
		if status, body := b.login("admin", "wrong"); status != http.StatusOK || !strings.Contains(body, loginFailed) {
			t.Fatalf("failure %d: %d %.200q", i+1, status, body)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for learnMetric(t, d, "doorman_learn_duplicates_total") < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("learned records not all seen as duplicates: %v", learnMetrics(t, d))
		}
		time.Sleep(2 * time.Millisecond)
	}
	if got := failuresOf(t, d, "127.0.0.40"); got != 5 {
		t.Errorf("failures = %d, want 5 (each login once)", got)
	}
	if got := learnMetric(t, d, "doorman_learn_failures_total"); got != 0 {
		t.Errorf("doorman_learn_failures_total = %d, want 0: the webhook counted each first", got)
	}
}

// TestLearnDjangoAdminBehindNginx: the Django admin as Django ships it (no
// doorman app), behind the shipped nginx site with doorman-learn.conf:
// nginx's records alone ban the address that fails, before its next
// request; a right password resets the count; a CSRF refusal counts nothing.
func TestLearnDjangoAdminBehindNginx(t *testing.T) {
	requireDjango(t)
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	sockDir := t.TempDir()
	sock := filepath.Join(sockDir, "learn.sock")
	d := learnDoorman(t, sock, "5", nil)
	demo := startDjangoDemo(t, map[string]string{"DEMO_DOORMAN_APP": "0"})
	n := learnDjangoSite(t, sock, demo)
	base := n.URL("")
	records := 0 // POSTs sent, each a record

	attacker := newBrowser(t, "127.0.0.10", base)
	fail := func(b *browser, who string) {
		t.Helper()
		status, body := b.login("admin", "wrong")
		records++
		if status != http.StatusOK || !strings.Contains(body, loginFailed) {
			t.Fatalf("%s failure: %d %.300q, want 200 with the login error", who, status, body)
		}
	}
	for range 4 {
		fail(attacker, "attacker")
	}
	if status, body := attacker.login("admin", demoPassword); status != http.StatusFound {
		t.Fatalf("right password: %d %.300q, want 302", status, body)
	}
	records++
	waitLearned(t, d, records)
	if got := failuresOf(t, d, "127.0.0.10"); got != 0 {
		t.Fatalf("failures after a success = %d, want 0 (reset)", got)
	}
	attacker = newBrowser(t, "127.0.0.10", base) // signed out: a new session
	for range 4 {
		fail(attacker, "attacker")
	}
	waitLearned(t, d, records)
	if got := failuresOf(t, d, "127.0.0.10"); got != 4 {
		t.Fatalf("failures = %d, want 4", got)
	}
	// The fifth failure bans. The record leaves nginx after the answer, so
	// a client on this host could be faster than it (TestLearnFarClient);
	// wait until it is booked.
	fail(attacker, "attacker")
	waitLearned(t, d, records)
	status, body := attacker.do("GET", "/admin/", nil)
	if status != http.StatusForbidden || !strings.Contains(body, "<h1>Access denied</h1>") {
		t.Fatalf("the request after the fifth failure: %d %.200q, want nginx's 403", status, body)
	}
	if !strings.Contains(d.Log(t), "msg=ban ip=127.0.0.10 key=127.0.0.10/32") {
		t.Errorf("no ban line for 127.0.0.10:\n%s", d.Log(t))
	}

	// CSRF: a POST without the token is Django's 403, ten times: nothing.
	csrf := newBrowser(t, "127.0.0.20", base)
	for range 10 {
		status, _ := csrf.do("POST", "/admin/login/", url.Values{"username": {"admin"}, "password": {"wrong"}})
		records++
		if status != http.StatusForbidden {
			t.Fatalf("POST without a CSRF token: %d, want 403", status)
		}
	}
	// A bystander is unaffected.
	bystander := newBrowser(t, "127.0.0.11", base)
	if status, _ := bystander.login("admin", demoPassword); status != http.StatusFound {
		t.Errorf("bystander login: %d, want 302", status)
	}
	records++
	waitLearned(t, d, records)
	if got := failuresOf(t, d, "127.0.0.20"); got != 0 {
		t.Errorf("CSRF refusals counted %d failures, want 0", got)
	}
	if status, _ := csrf.do("GET", "/admin/login/", nil); status != http.StatusOK {
		t.Errorf("after CSRF refusals: %d, want 200", status)
	}
	for name, want := range map[string]int{"doorman_learn_failures_total": 9, "doorman_learn_successes_total": 2,
		"doorman_learn_ignored_total": 10, "doorman_learn_parsed_total": records} {
		if got := learnMetric(t, d, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// TestLearnHostileInput: requests crafted to forge or break records through
// real nginx, and garbage written straight to the socket, change nothing:
// no address is counted but the sender's own, and each bad datagram is
// counted as dropped.
func TestLearnHostileInput(t *testing.T) {
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	sock := filepath.Join(t.TempDir(), "learn.sock")
	d := learnDoorman(t, sock, "1", nil)
	n := learnNginx(t, sock, loginApp(t))
	const attacker, victim = "127.0.0.30", "127.0.0.31"
	c := clientFrom(attacker)
	post := func(target, host string) {
		t.Helper()
		req, err := http.NewRequest("POST", n.URL(target), strings.NewReader("password=right"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if host != "" {
			req.Host = host
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// Each is a success of the attacker's (302) or nothing; none may name
	// the victim or fail anyone.
	forged := `","client":"` + victim + `","status":"200`
	post("/other/?"+url.QueryEscape(forged), "")
	post("/admin/login/?"+forged, "")
	post("/admin/login/"+url.PathEscape(forged), "")
	post("/admin/login/", "h"+strings.Repeat("x", 6000)+".example")
	post("/admin/login/"+strings.Repeat("%0a%01%7f", 600), "")
	post("/"+strings.Repeat("a/", 3000)+"../admin/login/", "")
	// Garbage from a local writer.
	conn, err := net.Dial("unixgram", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	garbage := [][]byte{
		[]byte("\x00\xff\xfe random bytes \x1b[31m"),
		[]byte(`<190>Dec  3 09:04:39 nginx: {"client":"` + victim + `","method":"POST","status":"200","uri":"/admin/lo`),
		make([]byte, 64<<10),
		[]byte(`{"client":"` + attacker + `","client":"` + victim + `","method":"POST","status":"200","uri":"/admin/login/"}`),
		[]byte(`{"client":"` + victim + `\u0000","method":"POST","status":"200","uri":"/admin/login/"}`),
	}
	for _, g := range garbage {
		if _, err := conn.Write(g); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := learnMetrics(t, d)
		if m["doorman_learn_records_total"] >= 6+len(garbage) && m["doorman_learn_successes_total"]+m["doorman_learn_ignored_total"] >= 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records not all handled: %v", m)
		}
		time.Sleep(2 * time.Millisecond)
	}
	m := learnMetrics(t, d)
	if m["doorman_learn_failures_total"] != 0 {
		t.Errorf("hostile input booked failures: %v", m)
	}
	for why, want := range map[string]int{"malformed": 3, "no_client": 1, "oversized": 1} {
		if got := m[`doorman_learn_dropped_total{why="`+why+`"}`]; got != want {
			t.Errorf("dropped %s = %d, want %d (%v)", why, got, want, m)
		}
	}
	for _, ip := range []string{attacker, victim} {
		if got := failuresOf(t, d, ip); got != 0 {
			t.Errorf("%s has %d failures, want 0", ip, got)
		}
	}
	if status, b := d.API(t, "GET", "/v1/bans", nil); status != http.StatusOK || strings.Contains(string(b), "127.0.0.") {
		t.Errorf("bans after hostile input: %d %s", status, b)
	}
}
