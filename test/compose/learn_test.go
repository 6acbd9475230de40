package compose

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The learn profile: the demo admin with no doorman app, behind nginx-learn
// with nginx/doorman-learn.conf; doorman-learn learns the logins from the
// records. Wrong passwords (200) count, a CSRF refusal (403) does not, the
// right password (302) starts the count again, and the fifth wrong password
// in a row bans: /admin/ is 403.
func TestComposeLearnProfile(t *testing.T) {
	start := time.Now()
	sameAccessLog(t)
	dc, root, images := prepare(t)

	subnet := freeSubnet(t)
	port := freePort(t)
	env := append(os.Environ(), images...)
	env = append(env,
		"DOORMAN_HTTP_PORT="+strconv.Itoa(freePort(t)),
		"DOORMAN_LEARN_PORT="+strconv.Itoa(port),
		"DOORMAN_SUBNET="+subnet.String(),
		"DOORMAN_API_TOKEN="+token,
		"DEMO_ADMIN_PASSWORD="+adminPassword,
	)
	compose := newProject(t, dc, root, "doormanlearn", "learn", env, "doorman-learn", "nginx-learn", "app-learn")
	if out, err := compose(15*time.Minute, "up", "-d", "--build", "nginx-learn"); err != nil {
		t.Fatalf("compose up --profile learn nginx-learn: %v\n%s", err, lastLines([]byte(out), 40))
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Timeout: 10 * time.Second, Jar: jar, Transport: &http.Transport{Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	waitFor(t, c, base+"/admin/login/", 3*time.Minute, func(r response) bool { return r.status == 200 })
	t.Logf("learn profile up and serving in %v", time.Since(start).Round(time.Second))

	// learned is doorman-learn's count of learned failures, read from its
	// metrics over the compose network.
	learned := func() int {
		t.Helper()
		out, err := compose(time.Minute, "exec", "-T", "app-learn", "python3", "-c", readMetric,
			"http://doorman-learn:9181/metrics", token, "doorman_learn_failures_total")
		if err != nil {
			t.Fatalf("reading doorman-learn's metrics: %v\n%s", err, out)
		}
		n, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("doorman_learn_failures_total: %q", out)
		}
		return n
	}
	csrf := regexp.MustCompile(`name="csrfmiddlewaretoken" value="([^"]+)"`)
	login := func(password string, withToken bool, want int) {
		t.Helper()
		r := get(t, c, base+"/admin/login/")
		m := csrf.FindStringSubmatch(r.body)
		if r.status != 200 || m == nil {
			t.Fatalf("login form: %d, no CSRF token: %.200q", r.status, r.body)
		}
		form := url.Values{"username": {"admin"}, "password": {password}, "next": {"/admin/"}}
		if withToken {
			form.Set("csrfmiddlewaretoken", m[1])
		}
		resp, err := c.PostForm(base+"/admin/login/", form)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("POST /admin/login/ (password %q, CSRF token %v): %d, want %d", password, withToken, resp.StatusCode, want)
		}
	}
	waitLearned := func(n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for learned() < n {
			if time.Now().After(deadline) {
				t.Fatalf("doorman-learn learned %d failures, want %d", learned(), n)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	allowed := func(what string) {
		t.Helper()
		if r := get(t, c, base+"/admin/login/"); r.status != 200 {
			t.Fatalf("%s: /admin/login/ %d, want 200", what, r.status)
		}
	}

	for range 4 {
		login("wrong", true, 200)
	}
	waitLearned(4)
	login("wrong", false, 403) // CSRF refused: not a failed login
	allowed("after 4 failures and a CSRF refusal")
	login(adminPassword, true, 302)
	c.Jar, _ = cookiejar.New(nil) // signed out: the login form again
	for range 4 {
		login("wrong", true, 200)
	}
	waitLearned(8)
	allowed("after a success and 4 failures")
	login("wrong", true, 200)
	r := waitFor(t, c, base+"/admin/", 10*time.Second, func(r response) bool { return r.status == 403 })
	if n := learned(); n != 9 {
		t.Errorf("doorman-learn learned %d failures, want 9 (the CSRF refusal is none)", n)
	}
	t.Logf("banned after the 5th failure in a row: %d; learn test done in %v", r.status, time.Since(start).Round(time.Second))
}

const adminPassword = "learn-demo-password"

// sameAccessLog: nginx/compose-learn.conf's server repeats the access_log
// line of nginx/doorman-learn.conf as shipped.
func sameAccessLog(t *testing.T) {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", "nginx", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var line string
	for l := range strings.SplitSeq(read("doorman-learn.conf"), "\n") {
		if strings.HasPrefix(l, "access_log ") {
			line = l
		}
	}
	if line == "" || !strings.Contains(read("compose-learn.conf"), "    "+line+"\n") {
		t.Fatalf("nginx/compose-learn.conf does not repeat doorman-learn.conf's %q", line)
	}
}

// readMetric is run by python3 in the app-learn container: argv[1] the
// metrics URL, argv[2] the token, argv[3] a series. It prints its value.
const readMetric = `
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
with urllib.request.urlopen(req, timeout=5) as r:
    for line in r.read().decode().splitlines():
        if line.startswith(sys.argv[3] + " "):
            print(int(float(line.split()[1])))
`
