package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/testproc"
)

// The cached mode (docs/nginx.md) through a real nginx running the shipped
// nginx/doorman-upstream.conf, doorman-cache.conf and
// doorman-location-cached.conf, adapted only in the upstream's address and
// the cache directory. The protected location adds one test-only header,
// X-Test-Cache: nginx's cache status of the auth subrequest (MISS: doorman
// was asked; HIT: the kept verdict was served).

// cachedSite is doorman in cached mode behind one or more nginx.
type cachedSite struct {
	t       *testing.T // the test that started it: restarted processes are stopped when it ends
	d       *Doorman
	nginx   []*Nginx
	decide  int    // doorman's decision port
	extra   string // added to each nginx's server block
	denyTxt string // DOORMAN_DENY_FILE
}

// startCachedSite starts nginxCount nginx and doorman with env, its refresh
// URLs pointing at every nginx.
func startCachedSite(t *testing.T, nginxCount int, env map[string]string, serverExtra string) *cachedSite {
	t.Helper()
	requireTool(t, "nginx", "nginx")
	s := &cachedSite{t: t, decide: freePort(t), extra: serverExtra}
	var urls []string
	for range nginxCount {
		n := s.startNginx(t)
		s.nginx = append(s.nginx, n)
		urls = append(urls, n.URL("/_doorman_refresh"))
	}
	s.denyTxt = filepath.Join(t.TempDir(), "deny.txt")
	if err := os.WriteFile(s.denyTxt, []byte("192.0.2.0/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := map[string]string{
		"DOORMAN_DECIDE_ADDR":        "127.0.0.1:" + strconv.Itoa(s.decide),
		"DOORMAN_NGINX_REFRESH_URLS": strings.Join(urls, ","),
		"DOORMAN_DENY_FILE":          s.denyTxt,
		"DOORMAN_MAX_FAILURES":       "2",
		"DOORMAN_STATE_FILE":         "",
	}
	for k, v := range env {
		e[k] = v
	}
	s.d = startDoorman(t, e)
	return s
}

// startNginx starts one nginx in front of the site's doorman.
func (s *cachedSite) startNginx(t *testing.T) *Nginx {
	t.Helper()
	return startNginxHTTP(t, func(dir string, port int) string { return s.nginxHTTP(t, dir, port) })
}

func (s *cachedSite) nginxHTTP(t *testing.T, dir string, port int) string {
	t.Helper()
	upstream := replaceAll(t, readRepo(t, "nginx/doorman-upstream.conf"), []string{
		"server 127.0.0.1:9180;", "server 127.0.0.1:" + strconv.Itoa(s.decide) + ";"})
	cache := replaceAll(t, readRepo(t, "nginx/doorman-cache.conf"), []string{
		"/var/cache/nginx/doorman", dir + "/cache"})
	www := filepath.Join(dir, "www")
	os.MkdirAll(www, 0o755)
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte(protectedBody+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return upstream + cache + fmt.Sprintf(`
server {
    listen 127.0.0.1:%d;
    include doorman/doorman-location-cached.conf;
    location /admin/ {
        auth_request /_doorman;
        auth_request_set $test_cache $upstream_cache_status;
        add_header X-Test-Cache $test_cache always;
        alias %s/;
    }
%s
}
`, port, www, s.extra)
}

func readRepo(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// cget sends GET url from the source address ip, with extra headers, on a
// new connection, and returns the status and nginx's cache status.
func cget(t *testing.T, ip, url string, headers ...string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: nil, DisableKeepAlives: true,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}).DialContext,
	}}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, ip, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Test-Cache")
}

// kept checks that ip's verdict is status and kept by nginx n: asked once,
// then served from the cache.
func (s *cachedSite) kept(t *testing.T, n *Nginx, ip string, status int, headers ...string) {
	t.Helper()
	for i := range 2 {
		got, cache := cget(t, ip, n.URL("/admin/index.html"), headers...)
		if got != status || i == 1 && cache != "HIT" {
			t.Fatalf("%s, request %d: %d (cache %s), want %d, then kept (HIT)", ip, i+1, got, cache, status)
		}
	}
}

// api sends an API call and decodes its JSON answer (nil for 204).
func (s *cachedSite) api(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	status, b := s.d.API(t, method, path, body)
	var out map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, path, status, b, err)
		}
	}
	return status, out
}

// addrs hands out loopback addresses, each /24 used once.
type addrs struct{ next int }

func (a *addrs) slash24() string {
	a.next++
	return fmt.Sprintf("127.%d.%d", 10+a.next/250, a.next%250)
}

// late counts and reports verdicts that were not the very next one expected.
type late struct {
	t    *testing.T
	n    int
	what []string
}

func (l *late) check(what string, got, want int, cache string) {
	if got != want {
		l.n++
		if len(l.what) < 10 {
			l.what = append(l.what, fmt.Sprintf("%s: %d (cache %s), want %d", what, got, cache, want))
		}
	}
}

func (l *late) report(rounds int) {
	l.t.Helper()
	if l.n > 0 {
		l.t.Errorf("%d late verdicts in %d rounds, want 0; first ones:\n%s", l.n, rounds, strings.Join(l.what, "\n"))
	}
}

// rounds is how many times each change is tried.
const rounds = 500

func TestNginxCacheChanges(t *testing.T) {
	s := startCachedSite(t, 1, map[string]string{
		"DOORMAN_RANGE_THRESHOLD":   "4",
		"DOORMAN_IPV4_RANGE_PREFIX": "24",
	}, "")
	n := s.nginx[0]
	url := n.URL("/admin/index.html")
	var a addrs

	refreshed := func(t *testing.T, what string, body map[string]any) {
		t.Helper()
		if body["proxies_refreshed"] != true {
			t.Fatalf("%s: %v, want proxies_refreshed true", what, body)
		}
	}

	t.Run("ban by the webhook", func(t *testing.T) {
		l := &late{t: t}
		for i := range rounds {
			ip := a.slash24() + ".1"
			s.kept(t, n, ip, 200)
			s.api(t, "POST", "/v1/failures", map[string]string{"ip": ip}) // one failure: no ban, still kept
			got, cache := cget(t, ip, url)
			l.check(fmt.Sprintf("round %d, %s after one failure", i, ip), got, 200, cache)
			_, body := s.api(t, "POST", "/v1/failures", map[string]string{"ip": ip})
			if body["banned"] != true {
				t.Fatalf("second failure of %s: %v, want banned", ip, body)
			}
			refreshed(t, "banning failure", body)
			got, cache = cget(t, ip, url)
			l.check(fmt.Sprintf("round %d, %s after its ban", i, ip), got, 403, cache)
			if cache != "HIT" {
				t.Fatalf("%s after its ban: cache %s, want HIT (the refresh stored the 403)", ip, cache)
			}
		}
		l.report(rounds)
	})

	t.Run("unban", func(t *testing.T) {
		l := &late{t: t}
		for i := range rounds {
			ip := a.slash24() + ".1"
			if status, _ := s.api(t, "POST", "/v1/bans", map[string]string{"ip": ip, "duration": "1h"}); status != 201 {
				t.Fatalf("ban %s: %d", ip, status)
			}
			s.kept(t, n, ip, 403)
			if status, body := s.api(t, "DELETE", "/v1/bans/"+ip, nil); status != 204 {
				t.Fatalf("unban %s: %d %v, want 204", ip, status, body)
			}
			got, cache := cget(t, ip, url)
			l.check(fmt.Sprintf("round %d, %s after its unban", i, ip), got, 200, cache)
		}
		l.report(rounds)
	})

	t.Run("range ban by escalation", func(t *testing.T) {
		l := &late{t: t}
		for i := range rounds / 5 { // each round bans four addresses and checks three more
			net24 := a.slash24()
			bystanders := []string{net24 + ".100", net24 + ".101", net24 + ".102"}
			for _, ip := range bystanders {
				s.kept(t, n, ip, 200)
			}
			var body map[string]any
			for j := 1; j <= 4; j++ {
				ip := fmt.Sprintf("%s.%d", net24, j)
				s.api(t, "POST", "/v1/failures", map[string]string{"ip": ip})
				_, body = s.api(t, "POST", "/v1/failures", map[string]string{"ip": ip})
			}
			if body["key"] == nil || body["banned"] != true {
				t.Fatalf("fourth ban in %s.0/24: %v", net24, body)
			}
			refreshed(t, "escalating failure", body)
			for _, ip := range bystanders {
				got, cache := cget(t, ip, url)
				l.check(fmt.Sprintf("round %d, %s after the range ban", i, ip), got, 403, cache)
			}
		}
		l.report(rounds / 5 * 3)
	})

	t.Run("manual CIDR ban and unban", func(t *testing.T) {
		l := &late{t: t}
		for i := range rounds {
			net24 := a.slash24()
			in, out := net24+".7", net24+".77"
			s.kept(t, n, in, 200)
			s.kept(t, n, out, 200)
			status, body := s.api(t, "POST", "/v1/bans", map[string]string{"ip": net24 + ".0/26", "duration": "1h"})
			if status != 201 {
				t.Fatalf("ban %s.0/26: %d %v", net24, status, body)
			}
			refreshed(t, "CIDR ban", body)
			got, cache := cget(t, in, url)
			l.check(fmt.Sprintf("round %d, %s inside the CIDR ban", i, in), got, 403, cache)
			got, cache = cget(t, out, url)
			l.check(fmt.Sprintf("round %d, %s outside the CIDR ban", i, out), got, 200, cache)
			if cache != "HIT" {
				t.Fatalf("%s outside the ban: cache %s, want still kept (HIT)", out, cache)
			}
			if status, _ := s.api(t, "DELETE", "/v1/bans/"+net24+".0/26", nil); status != 204 {
				t.Fatalf("unban %s.0/26: %d", net24, status)
			}
			got, cache = cget(t, in, url)
			l.check(fmt.Sprintf("round %d, %s after the CIDR unban", i, in), got, 200, cache)
		}
		l.report(rounds * 3)
	})

	t.Run("deny-list reload", func(t *testing.T) {
		l := &late{t: t}
		deny := "192.0.2.0/24\n"
		reloads := strings.Count(s.d.Log(t), "nginx caches refreshed after the reload")
		for i := range rounds {
			ip := a.slash24() + ".1"
			s.kept(t, n, ip, 200)
			deny += ip + "\n"
			writeFileAtomic(t, s.denyTxt, deny)
			s.d.Cmd.Process.Signal(syscall.SIGHUP)
			reloads++
			waitLog(t, s.d, "nginx caches refreshed after the reload", reloads)
			got, cache := cget(t, ip, url)
			l.check(fmt.Sprintf("round %d, %s after the reload", i, ip), got, 403, cache)
		}
		l.report(rounds)
	})

	t.Run("expiring ban", func(t *testing.T) {
		// Bans of 2-3 s, 500 at once: each address is asked right after its
		// ban's end, and must be allowed.
		type ban struct {
			ip  string
			end time.Time // the latest the ban can end
		}
		bans := make([]ban, rounds)
		for i := range bans {
			ip := a.slash24() + ".1"
			d := 2*time.Second + time.Duration(i%10)*100*time.Millisecond
			if status, _ := s.api(t, "POST", "/v1/bans", map[string]string{"ip": ip, "duration": d.String()}); status != 201 {
				t.Fatalf("ban %s: %d", ip, status)
			}
			bans[i] = ban{ip, time.Now().Add(d)}
			s.kept(t, n, ip, 403)
		}
		l := &late{t: t}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range bans {
			wg.Go(func() {
				time.Sleep(time.Until(bans[i].end))
				got, cache := cget(t, bans[i].ip, url)
				mu.Lock()
				l.check(fmt.Sprintf("%s right after its ban ended", bans[i].ip), got, 200, cache)
				mu.Unlock()
			})
		}
		wg.Wait()
		l.report(rounds)
	})

	if got := metric(t, s.d, "doorman_cache_refresh_errors_total"); got != 0 {
		t.Errorf("doorman_cache_refresh_errors_total = %v, want 0", got)
	}
}

// writeFileAtomic replaces path with data by rename, as an operator's tool
// would, so doorman never reads half a file.
func writeFileAtomic(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitLog polls doorman's log until it holds line n times.
func waitLog(t *testing.T, d *Doorman, line string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(d.Log(t), line) < n {
		if time.Now().After(deadline) {
			t.Fatalf("doorman's log holds %q %d times after 10 s, want %d", line, strings.Count(d.Log(t), line), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// metric reads one series from doorman's /metrics.
func metric(t *testing.T, d *Doorman, name string) float64 {
	t.Helper()
	_, b, err := d.Get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q", name, line)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// Addresses nginx writes its own way (realip lets the test pick them; only
// this test trusts X-Test-Client): kept, then refreshed after a ban.
func TestNginxCacheSpellings(t *testing.T) {
	s := startCachedSite(t, 1, nil, "    set_real_ip_from 127.0.0.1;\n    real_ip_header X-Test-Client;\n")
	n := s.nginx[0]
	for _, tc := range []struct{ client, ban string }{
		{"::1:2", "::1:2"},                         // nginx: ::0.1.0.2
		{"::a00:1", "::a00:1"},                     // nginx: ::10.0.0.1
		{"2001:db8:0:0:1::1", "2001:db8::1:0:0:1"}, // nginx: 2001:db8::1:0:0:1
		{"2001:DB8:aa::1", "2001:db8:aa::1"},
		{"::ffff:198.51.100.7", "198.51.100.7"}, // a dual-stack listener's IPv4
	} {
		t.Run(tc.client, func(t *testing.T) {
			s.kept(t, n, "127.0.0.1", 200, "X-Test-Client", tc.client)
			status, body := s.api(t, "POST", "/v1/bans", map[string]string{"ip": tc.ban, "duration": "1h"})
			if status != 201 || body["proxies_refreshed"] != true {
				t.Fatalf("ban %s: %d %v, want 201 and proxies_refreshed true", tc.ban, status, body)
			}
			got, cache := cget(t, "127.0.0.1", n.URL("/admin/index.html"), "X-Test-Client", tc.client)
			if got != 403 || cache != "HIT" {
				t.Errorf("%s after its ban: %d (cache %s), want 403 from the refreshed cache (HIT)", tc.client, got, cache)
			}
			if status, _ := s.api(t, "DELETE", "/v1/bans/"+tc.ban, nil); status != 204 {
				t.Fatalf("unban %s: %d, want 204", tc.ban, status)
			}
			got, cache = cget(t, "127.0.0.1", n.URL("/admin/index.html"), "X-Test-Client", tc.client)
			if got != 200 || cache != "HIT" {
				t.Errorf("%s after its unban: %d (cache %s), want 200 from the refreshed cache (HIT)", tc.client, got, cache)
			}
		})
	}
}

// Two nginx in front of one doorman: a ban reaches both before it answers.
func TestNginxCacheTwoNginx(t *testing.T) {
	s := startCachedSite(t, 2, nil, "")
	var a addrs
	for i := range 50 {
		ip := a.slash24() + ".1"
		for _, n := range s.nginx {
			s.kept(t, n, ip, 200)
		}
		s.api(t, "POST", "/v1/failures", map[string]string{"ip": ip})
		_, body := s.api(t, "POST", "/v1/failures", map[string]string{"ip": ip})
		if body["banned"] != true || body["proxies_refreshed"] != true {
			t.Fatalf("round %d: banning failure of %s: %v, want banned, proxies_refreshed", i, ip, body)
		}
		for j, n := range s.nginx {
			if got, cache := cget(t, ip, n.URL("/admin/index.html")); got != 403 {
				t.Fatalf("round %d: nginx %d let %s through after its ban: %d (cache %s)", i, j, ip, got, cache)
			}
		}
	}
}

// A refresh that cannot reach an nginx: the answer says so, it is counted,
// and that nginx serves the old verdict no longer than DOORMAN_CACHE_TTL.
func TestNginxCacheRefreshFails(t *testing.T) {
	s := startCachedSite(t, 1, map[string]string{"DOORMAN_CACHE_TTL": "3s"}, "")
	n := s.nginx[0]
	url := n.URL("/admin/index.html")
	var a addrs

	t.Run("nginx down, cache kept", func(t *testing.T) {
		ip := a.slash24() + ".1"
		s.kept(t, n, ip, 200)
		kept := time.Now()
		restart := s.stopNginx(t, 0)
		_, body := s.ban(t, ip)
		if body["proxies_refreshed"] != false {
			t.Fatalf("ban while nginx is down: %v, want proxies_refreshed false", body)
		}
		restart()
		lateBy := waitVerdict(t, ip, url, 403, 10*time.Second)
		t.Logf("the ban reached the restarted nginx %v after it was made, %v after the allow was kept", lateBy, time.Since(kept))
		if since := time.Since(kept); since > 3*time.Second+2*time.Second {
			t.Errorf("old verdict served until %v after it was kept (%v after the ban), want within DOORMAN_CACHE_TTL (3 s) and a second's rounding", since, lateBy)
		}
	})

	t.Run("nginx restarted, cache kept: still refreshed", func(t *testing.T) {
		ip := a.slash24() + ".1"
		s.kept(t, n, ip, 200)
		s.stopNginx(t, 0)()
		if got, cache := cget(t, ip, url); got != 200 || cache != "HIT" {
			t.Fatalf("after the restart: %d (cache %s), want the kept 200 (HIT)", got, cache)
		}
		if _, body := s.ban(t, ip); body["proxies_refreshed"] != true {
			t.Fatalf("ban: %v, want proxies_refreshed true", body)
		}
		if got, cache := cget(t, ip, url); got != 403 {
			t.Errorf("after the ban: %d (cache %s), want 403", got, cache)
		}
	})

	t.Run("nginx restarted, cache wiped", func(t *testing.T) {
		ip := a.slash24() + ".1"
		s.kept(t, n, ip, 200)
		restart := s.stopNginx(t, 0)
		if err := os.RemoveAll(filepath.Join(s.nginx[0].Dir, "cache")); err != nil {
			t.Fatal(err)
		}
		restart()
		s.kept(t, n, ip, 200)
		if _, body := s.ban(t, ip); body["proxies_refreshed"] != true {
			t.Fatalf("ban: %v, want proxies_refreshed true", body)
		}
		if got, cache := cget(t, ip, url); got != 403 {
			t.Errorf("after the ban: %d (cache %s), want 403", got, cache)
		}
	})

	errs := metric(t, s.d, "doorman_cache_refresh_errors_total")
	if errs < 1 {
		t.Errorf("doorman_cache_refresh_errors_total = %v, want the failed refresh counted", errs)
	}
	if !strings.Contains(s.d.Log(t), "nginx cache refresh failed") {
		t.Errorf("doorman's log does not say the refresh failed")
	}
}

// A refresh URL that reaches nginx but no refresh location (a wrong path):
// the same bound, DOORMAN_CACHE_TTL.
func TestNginxCacheRefreshURLWrong(t *testing.T) {
	s := startCachedSite(t, 1, map[string]string{"DOORMAN_CACHE_TTL": "2s"}, "")
	n := s.nginx[0]
	s.d.Env["DOORMAN_NGINX_REFRESH_URLS"] = n.URL("/no-such-location")
	s.d.Restart(t)
	ip := "127.9.9.1"
	s.kept(t, n, ip, 200)
	kept := time.Now()
	_, body := s.ban(t, ip)
	if body["proxies_refreshed"] != false {
		t.Fatalf("ban: %v, want proxies_refreshed false", body)
	}
	lateBy := waitVerdict(t, ip, n.URL("/admin/index.html"), 403, 10*time.Second)
	t.Logf("the ban reached nginx %v after it was made, %v after the allow was kept", lateBy, time.Since(kept))
	if since := time.Since(kept); since > 2*time.Second+2*time.Second {
		t.Errorf("old verdict served %v after it was kept, want within DOORMAN_CACHE_TTL (2 s) and a second's rounding", since)
	}
	// One per key refreshed: the key remembered, and in the grace after the
	// restart the address named by the ban, as IPv4 and as ::ffff:.
	if got := metric(t, s.d, "doorman_cache_refresh_errors_total"); got < 1 || got > 2 {
		t.Errorf("doorman_cache_refresh_errors_total = %v, want 1 or 2", got)
	}
}

// ban bans ip for an hour through the API.
func (s *cachedSite) ban(t *testing.T, ip string) (int, map[string]any) {
	t.Helper()
	status, body := s.api(t, "POST", "/v1/bans", map[string]string{"ip": ip, "duration": "1h"})
	if status != 201 {
		t.Fatalf("ban %s: %d %v", ip, status, body)
	}
	return status, body
}

// stopNginx stops nginx i and returns what starts it again, on the same
// port, directory and cache.
func (s *cachedSite) stopNginx(t *testing.T, i int) (restart func()) {
	t.Helper()
	n := s.nginx[i]
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		bin, _ := lookTool("nginx")
		p, err := testproc.StartNginx(bin, n.Dir, n.Port)
		if err != nil {
			t.Fatal(err)
		}
		s.t.Cleanup(func() { p.Stop() })
		s.nginx[i].Nginx = p
	}
}

// waitVerdict polls ip's verdict until it is want and returns how long that took.
func waitVerdict(t *testing.T, ip, url string, want int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got, cache := cget(t, ip, url)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: %d (cache %s) for %v, want %d", ip, got, cache, limit, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The refresh location answers 403 to every address but doorman's
// (loopback 127.0.0.1 and ::1), without asking doorman; and a client's
// X-Doorman-Refresh on a protected request changes nothing.
func TestNginxCacheRefreshRefused(t *testing.T) {
	s := startCachedSite(t, 1, nil, "")
	n := s.nginx[0]
	banned, allowed := "127.0.0.60", "127.0.0.61"
	s.ban(t, banned)
	s.kept(t, n, allowed, 200)
	s.kept(t, n, banned, 403)
	decisions := metric(t, s.d, `doorman_decisions_total{verdict="allow",reason="allowed"}`)
	for _, from := range []string{"127.0.0.2", "127.0.0.60", "127.0.0.61", "127.1.2.3", "127.255.255.254"} {
		for _, target := range []string{banned, allowed, "", "127.0.0.1"} {
			req, _ := http.NewRequest(http.MethodGet, n.URL("/_doorman_refresh"), nil)
			if target != "" {
				req.Header.Set("X-Doorman-Refresh", target)
			}
			resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
				DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 403 || resp.Header.Get("X-Doorman-Verdict") != "" {
				t.Errorf("refresh of %q from %s: %d, X-Doorman-Verdict %q; want nginx's own 403",
					target, from, resp.StatusCode, resp.Header.Get("X-Doorman-Verdict"))
			}
		}
	}
	// The banned client cannot borrow the allowed client's kept verdict.
	for _, h := range [][]string{{"X-Doorman-Refresh", allowed}, {"X-Real-IP", allowed}, {"X-Forwarded-For", allowed}} {
		if got, cache := cget(t, banned, n.URL("/admin/index.html"), h...); got != 403 {
			t.Errorf("banned client with %s: %s: %d (cache %s), want 403", h[0], h[1], got, cache)
		}
	}
	if got := metric(t, s.d, `doorman_decisions_total{verdict="allow",reason="allowed"}`); got != decisions {
		t.Errorf("refused refreshes reached doorman: allowed decisions %v, then %v", decisions, got)
	}
	// From doorman's own address the refresh goes through.
	req, _ := http.NewRequest(http.MethodGet, n.URL("/_doorman_refresh"), nil)
	req.Header.Set("X-Doorman-Refresh", banned)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Doorman-Verdict") != "deny" {
		t.Errorf("refresh from 127.0.0.1: %d, X-Doorman-Verdict %q; want doorman's 403", resp.StatusCode, resp.Header.Get("X-Doorman-Verdict"))
	}
}
