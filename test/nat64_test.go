package test

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/doorman/doorman/internal/testproc"
)

// netns is a network namespace joined to this one by a veth pair, made by
// newNetns and deleted when the test ends.
type netns struct {
	name, outer string // the namespace, the veth end left in this namespace
}

// newNetns makes a namespace whose veth end holds inner (a CIDR, with
// nodad) and whose outer end in this namespace holds outer. Root only.
func newNetns(t *testing.T, inner, outer string) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		testproc.Require(t, "network namespaces need root")
	}
	requireTool(t, "ip", "iproute2")
	id := strconv.Itoa(os.Getpid() % 100000)
	n := &netns{name: "dmtest" + id, outer: "dmo" + id}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	exec.Command("ip", "netns", "del", n.name).Run() // a leftover of a killed run
	run("netns", "add", n.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() }) // takes the veth pair with it
	run("link", "add", n.outer, "type", "veth", "peer", "name", "dmi"+id)
	run("link", "set", "dmi"+id, "netns", n.name)
	run("-n", n.name, "link", "set", "lo", "up")
	run("-n", n.name, "addr", "add", inner, "dev", "dmi"+id, "nodad")
	run("-n", n.name, "link", "set", "dmi"+id, "up")
	run("addr", "add", outer, "dev", n.outer, "nodad")
	run("link", "set", n.outer, "up")
	return n
}

// run runs a command inside the namespace and returns its output.
func (n *netns) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s %s: %v\n%s", n.name, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestNginxCacheNAT64: a client behind NAT64 (its address in 64:ff9b::/96,
// judged as the IPv4 address it embeds) in a network namespace, through a
// real nginx in cached mode. nginx keys its cache by the IPv6 address, which
// a change of the IPv4 address's bans cannot name, so doorman never lets
// nginx keep such a verdict: every ban and unban holds at the very next
// request (0 late verdicts).
func TestNginxCacheNAT64(t *testing.T) {
	requireTool(t, "nginx", "nginx")
	requireTool(t, "curl", "curl")
	const client, ipv4 = "64:ff9b::c633:6409", "198.51.100.9" // RFC 6052 embedding
	ns := newNetns(t, client+"/96", "2001:db8:64::1/64")
	ns.run(t, "ip", "-6", "route", "add", "2001:db8:64::/64", "dev", "dmi"+strconv.Itoa(os.Getpid()%100000))
	if out, err := exec.Command("ip", "-6", "route", "add", client+"/128", "dev", ns.outer).CombinedOutput(); err != nil {
		t.Fatalf("route to the client: %v\n%s", err, out)
	}
	s := &cachedSite{t: t, decide: freePort(t)}
	n := startNginxHTTP(t, func(dir string, port int) string {
		conf := s.nginxHTTP(t, dir, port)
		return strings.Replace(conf, fmt.Sprintf("listen 127.0.0.1:%d;", port),
			fmt.Sprintf("listen 127.0.0.1:%d;\n    listen [2001:db8:64::1]:%d;", port, port), 1)
	})
	s.nginx = []*Nginx{n}
	s.d = startDoorman(t, map[string]string{"DOORMAN_DECIDE_ADDR": "127.0.0.1:" + strconv.Itoa(s.decide),
		"DOORMAN_NGINX_REFRESH_URLS": n.URL("/_doorman_refresh"), "DOORMAN_STATE_FILE": ""})
	url := fmt.Sprintf("http://[2001:db8:64::1]:%d/admin/index.html", n.Port)
	get := func() (int, string) {
		t.Helper()
		out := ns.run(t, "curl", "-s", "-o", "/dev/null", "--max-time", "5", "-w", "%{http_code} %header{x-test-cache}", url)
		f := strings.Fields(out)
		code, _ := strconv.Atoi(f[0])
		cache := ""
		if len(f) > 1 {
			cache = f[1]
		}
		return code, cache
	}
	for i := range 2 {
		if code, cache := get(); code != 200 || cache == "HIT" {
			t.Fatalf("request %d from the NAT64 client: %d (cache %s), want 200 and never kept", i+1, code, cache)
		}
	}
	l := &late{t: t}
	const tries = 20
	for i := range tries {
		if status, body := s.api(t, "POST", "/v1/bans", map[string]string{"ip": ipv4, "duration": "1h"}); status != 201 || body["proxies_refreshed"] != true {
			t.Fatalf("ban %s: %d %v, want 201 and proxies_refreshed true", ipv4, status, body)
		}
		code, cache := get()
		l.check(fmt.Sprintf("round %d, after the ban", i), code, 403, cache)
		if status, _ := s.api(t, "DELETE", "/v1/bans/"+ipv4, nil); status != 204 {
			t.Fatalf("unban %s: %d", ipv4, status)
		}
		code, cache = get()
		l.check(fmt.Sprintf("round %d, after the unban", i), code, 200, cache)
	}
	l.report(tries)
}
