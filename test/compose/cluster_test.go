package compose

import (
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The cluster profile: Redis, two doormen sharing it, two nginx front ends.
// A ban or unban made through one doorman holds at both front ends; failures
// reported to both doormen add up; a ban made while Redis is down reaches
// the other front end once Redis is back.
func TestComposeClusterProfile(t *testing.T) {
	start := time.Now()
	dc, root, images := prepare(t)

	subnet := freeSubnet(t)
	portA, portB := freePort(t), freePort(t)
	env := append(os.Environ(), images...)
	env = append(env,
		"DOORMAN_HTTP_PORT="+strconv.Itoa(freePort(t)),
		"DOORMAN_CLUSTER_PORT_A="+strconv.Itoa(portA),
		"DOORMAN_CLUSTER_PORT_B="+strconv.Itoa(portB),
		"DOORMAN_SUBNET="+subnet.String(),
		"DOORMAN_API_TOKEN="+token,
	)
	compose := newProject(t, dc, root, "doormancluster", "cluster", env, "redis", "doorman-a", "doorman-b", "nginx-a", "nginx-b")
	if out, err := compose(15*time.Minute, "up", "-d", "--build"); err != nil {
		t.Fatalf("compose up --profile cluster: %v\n%s", err, lastLines([]byte(out), 40))
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	front := map[string]string{
		"nginx-a": fmt.Sprintf("http://127.0.0.1:%d/admin/", portA),
		"nginx-b": fmt.Sprintf("http://127.0.0.1:%d/admin/", portB),
	}
	for _, url := range front {
		waitFor(t, c, url, 3*time.Minute, func(r response) bool { return r.status > 0 && r.status < 400 })
	}
	t.Logf("cluster profile up and serving in %v", time.Since(start).Round(time.Second))
	me := frontClient(t, compose, "nginx-a", subnet)

	inside := func(service string, args ...string) string {
		t.Helper()
		out, err := compose(time.Minute, append([]string{"exec", "-T", service}, args...)...)
		if err != nil {
			t.Fatalf("exec %s %v: %v\n%s", service, args, err, out)
		}
		return out
	}
	// both waits until both front ends deny this client (banned) or let it
	// through to the app.
	both := func(what string, banned bool) {
		t.Helper()
		for name, url := range front {
			r := waitFor(t, c, url, 10*time.Second, func(r response) bool { return (r.status == 403) == banned && r.status > 0 })
			if banned && !strings.Contains(r.body, "403 Forbidden") {
				t.Errorf("%s via %s: status 403 without doorman's page: %.200q", what, name, r.body)
			}
			if !banned && r.status >= 400 {
				t.Errorf("%s via %s: status %d, want the app", what, name, r.status)
			}
		}
	}

	// A manual ban through doorman-a holds at nginx-b; the unban through
	// doorman-b lifts it at nginx-a.
	inside("doorman-a", "/doorman", "ban", me.String(), "-for", "10m")
	both("ban via doorman-a", true)
	if out := inside("doorman-b", "/doorman", "unban", me.String()); !strings.Contains(out, "unbanned") {
		t.Fatalf("unban via doorman-b: %s", out)
	}
	both("unban via doorman-b", false)

	// Failures reported to both doormen add up to one ban, at both front ends.
	for i := 1; i <= 5; i++ {
		svc := []string{"doorman-a", "doorman-b"}[i%2]
		out := inside("app", "python3", "-c", postFailureTo, "http://"+svc+":9181", me.String(), token)
		if !strings.Contains(out, "status=200") || strings.Contains(out, `"banned":true`) != (i == 5) {
			t.Fatalf("failure %d via %s: %s, want status=200 and banned=%v", i, svc, out, i == 5)
		}
	}
	both("5 failures across the cluster", true)
	inside("doorman-a", "/doorman", "unban", me.String())
	both("unban", false)

	// Redis down: each doorman goes on alone; a ban made meanwhile reaches the
	// other front end once Redis is back (empty: no persistence).
	if out, err := compose(2*time.Minute, "stop", "-t", "5", "redis"); err != nil {
		t.Fatalf("stop redis: %v\n%s", err, out)
	}
	inside("doorman-b", "/doorman", "ban", me.String(), "-for", "10m")
	waitFor(t, c, front["nginx-b"], 10*time.Second, func(r response) bool { return r.status == 403 })
	if r := get(t, c, front["nginx-a"]); r.status >= 400 {
		t.Errorf("nginx-a while Redis is down: %d, want the app (the ban is not shared yet)", r.status)
	}
	if out, err := compose(2*time.Minute, "start", "redis"); err != nil {
		t.Fatalf("start redis: %v\n%s", err, out)
	}
	waitFor(t, c, front["nginx-a"], time.Minute, func(r response) bool { return r.status == 403 })
	t.Logf("compose cluster test done in %v", time.Since(start).Round(time.Second))
}

// postFailureTo is run by python3 in the app container: argv[1] the API's
// base URL, argv[2] the address, argv[3] the token. It prints status=CODE
// and the body.
const postFailureTo = `
import json, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1] + "/v1/failures", method="POST",
    headers={"Content-Type": "application/json", "Authorization": "Bearer " + sys.argv[3]},
    data=json.dumps({"ip": sys.argv[2], "username": "admin"}).encode())
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print("status=%d %s" % (r.status, r.read().decode()))
except urllib.error.HTTPError as e:
    print("status=%d %s" % (e.code, e.read().decode()))
`

// frontClient reads this test's address as the nginx service sees it
// ($remote_addr of its first /admin/ request) and checks it is in subnet.
func frontClient(t *testing.T, compose func(time.Duration, ...string) (string, error), service string, subnet netip.Prefix) netip.Addr {
	t.Helper()
	id, err := compose(time.Minute, "ps", "-q", service)
	if err != nil {
		t.Fatalf("compose ps: %v\n%s", err, id)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := exec.Command("docker", "logs", strings.TrimSpace(id)).CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.Contains(line, `"GET /admin/ `) {
				continue
			}
			addr, err := netip.ParseAddr(strings.Fields(line)[0])
			if err != nil || !subnet.Contains(addr) {
				t.Fatalf("%s log line %q: client not in %v", service, line, subnet)
			}
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("no /admin/ request in %s's log:\n%s", service, lastLines(out, 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
