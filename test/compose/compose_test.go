// Package compose brings up the repository's docker-compose stack (nginx,
// doorman, the demo app) and drives it through nginx's published port.
//
// The base images are built locally by images.sh (no registry needed) and
// reused when present. Without docker or docker-compose the test skips, or
// fails when DOORMAN_TEST_REQUIRE_ALL=1.
package compose

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/testproc"
)

const token = "compose-test-token"

// prepare checks the tools and the engine, and builds (or reuses) the base
// images. It returns the compose command, the repository root and the image
// variables (NAME=image) for the compose environment.
func prepare(t *testing.T) (dc []string, root string, images []string) {
	t.Helper()
	dc = composeTool(t)
	requireTool(t, "debootstrap", "debootstrap")
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		testproc.Require(t, fmt.Sprintf("docker engine not reachable (start dockerd): %v\n%s", err, lastLines(out, 5)))
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	images = buildImages(t, root)
	t.Logf("base images ready in %v: %v", time.Since(start).Round(time.Second), images)
	return dc, root, images
}

// newProject returns a runner of docker-compose (dc) on the repository's
// file, as a new project named after prefix, the test's process and a random
// number, with profile (none when "") and env. The runner takes a timeout
// and compose's arguments. At cleanup, when the test failed, it logs the
// last lines of logServices (every service when none is named), then takes
// the project down.
func newProject(t *testing.T, dc []string, root, prefix, profile string, env []string, logServices ...string) func(time.Duration, ...string) (string, error) {
	t.Helper()
	project := fmt.Sprintf("%s%d%04d", prefix, os.Getpid(), rand.IntN(10000))
	base := append(slices.Clone(dc[1:]), "-p", project, "-f", filepath.Join(root, "docker-compose.yml"))
	if profile != "" {
		base = append(base, "--profile", profile)
	}
	compose := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, dc[0], append(slices.Clone(base), args...)...)
		cmd.Dir, cmd.Env = root, env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := compose(time.Minute, append([]string{"logs", "--no-color", "--tail", "100"}, logServices...)...)
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := compose(3*time.Minute, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	return compose
}

func TestComposeStack(t *testing.T) {
	start := time.Now()
	dc, root, images := prepare(t)

	// The example site passes nginx -t in the stack's nginx image as well.
	nginxImage := ""
	for _, v := range images {
		if name, image, _ := strings.Cut(v, "="); name == "DOORMAN_NGINX_IMAGE" {
			nginxImage = image
		}
	}
	if out, err := exec.Command("docker", "run", "--rm", "-v", filepath.Join(root, "nginx")+":/etc/nginx/doorman:ro",
		nginxImage, "sh", "-c", "cp /etc/nginx/doorman/site.conf.example /etc/nginx/conf.d/site.conf && nginx -t").CombinedOutput(); err != nil {
		t.Errorf("nginx -t of site.conf.example in %s: %v\n%s", nginxImage, err, out)
	}

	subnet := freeSubnet(t)
	port := freePort(t)
	env := append(os.Environ(), images...)
	env = append(env,
		"DOORMAN_HTTP_PORT="+strconv.Itoa(port),
		"DOORMAN_SUBNET="+subnet.String(),
		"DOORMAN_API_TOKEN="+token,
	)
	compose := newProject(t, dc, root, "doormantest", "", env)
	upStart := time.Now()
	if out, err := compose(15*time.Minute, "up", "-d", "--build"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, lastLines([]byte(out), 40))
	}
	admin := fmt.Sprintf("http://127.0.0.1:%d/admin/", port)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	r := waitFor(t, c, admin, 3*time.Minute, func(r response) bool { return r.status > 0 && r.status < 400 })
	t.Logf("stack up and serving in %v", time.Since(upStart).Round(time.Second))
	if strings.Contains(r.body, "403 Forbidden") || strings.Contains(r.body, "503 Service Unavailable") {
		t.Fatalf("GET /admin/: doorman page with status %d", r.status)
	}

	// The address nginx sees for this test's requests: Docker's port
	// forwarding makes it the network's gateway, read from nginx's log.
	me := frontClient(t, compose, "nginx", subnet)
	t.Logf("nginx sees this client as %s", me)

	inside := func(service string, args ...string) string {
		t.Helper()
		out, err := compose(time.Minute, append([]string{"exec", "-T", service}, args...)...)
		if err != nil {
			t.Fatalf("exec %s %v: %v\n%s", service, args, err, out)
		}
		return out
	}

	// The gate on /admin/: no session, the gate page; alice enrolled with
	// the CLI's link and a TOTP code reaches Django's login.
	resp, err := noRedirects().Get(admin)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/_doorman/gate?rd=/admin/" {
		t.Fatalf("GET /admin/ without a session: %d Location %q, want 302 to the gate", resp.StatusCode, resp.Header.Get("Location"))
	}
	origin := fmt.Sprintf("http://localhost:%d", port)
	alice := gateSignIn(t, inside, origin)
	inDjango := func(what string) {
		t.Helper()
		if r := get(t, alice, origin+"/admin/"); r.status != 200 || !strings.Contains(r.body, "Django") {
			t.Fatalf("%s: alice's /admin/: %d %.200q, want Django's login", what, r.status, r.body)
		}
	}
	inDjango("after enrollment")

	// Failed logins reported over the compose network, as the app does:
	// without the token 401, with it the 5th failure bans.
	if out := inside("app", "python3", "-c", postFailure, me.String(), ""); !strings.Contains(out, "status=401") {
		t.Fatalf("failure without token: %s, want status=401", out)
	}
	for i := 1; i <= 5; i++ {
		out := inside("app", "python3", "-c", postFailure, me.String(), token)
		if !strings.Contains(out, "status=200") || strings.Contains(out, `"banned":true`) != (i == 5) {
			t.Fatalf("failure %d: %s, want status=200 and banned=%v", i, out, i == 5)
		}
	}
	denied := get(t, c, admin)
	if denied.status != 403 || !strings.Contains(denied.body, "403 Forbidden") {
		t.Fatalf("after 5 failures: status %d body %.200q, want the 403 page", denied.status, denied.body)
	}
	if n, err := strconv.Atoi(denied.retryAfter); err != nil || n <= 0 {
		t.Errorf("banned: Retry-After %q, want positive seconds", denied.retryAfter)
	}
	if out := inside("doorman", "/doorman", "bans"); !strings.Contains(out, me.String()+"/32") {
		t.Errorf("doorman bans: %s, want %s/32 listed", out, me)
	}
	inDjango("banned address, gate session") // a session holder is not guessing

	// The ban lives in the state volume: it holds across a restart.
	if out, err := compose(2*time.Minute, "restart", "-t", "10", "doorman"); err != nil {
		t.Fatalf("restart doorman: %v\n%s", err, out)
	}
	waitFor(t, c, admin, time.Minute, func(r response) bool { return r.status == 403 })
	inDjango("after a restart") // the credential and the key are in the state volume

	// doorman stopped: nginx fails closed with its 503 page.
	if out, err := compose(2*time.Minute, "stop", "-t", "10", "doorman"); err != nil {
		t.Fatalf("stop doorman: %v\n%s", err, out)
	}
	down := get(t, c, admin)
	if down.status != 503 || !strings.Contains(down.body, "503 Service Unavailable") {
		t.Errorf("doorman stopped: status %d body %.200q, want the 503 page", down.status, down.body)
	}
	if out, err := compose(2*time.Minute, "start", "doorman"); err != nil {
		t.Fatalf("start doorman: %v\n%s", err, out)
	}
	waitFor(t, c, admin, time.Minute, func(r response) bool { return r.status == 403 })

	if out := inside("doorman", "/doorman", "unban", me.String()); !strings.Contains(out, "unbanned") {
		t.Errorf("doorman unban: %s", out)
	}
	if r := get(t, c, admin); r.status >= 400 {
		t.Fatalf("after unban: status %d, want the app", r.status)
	}

	// The API is not reachable through nginx: failures posted there are
	// never counted.
	for i := 0; i < 6; i++ {
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/v1/failures", port),
			strings.NewReader(fmt.Sprintf(`{"ip":%q}`, me)))
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := c.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	if r := get(t, c, admin); r.status >= 400 {
		t.Errorf("after POSTs to /v1/failures through nginx: status %d, want the app", r.status)
	}
	if out := inside("doorman", "/doorman", "gate", "signout", "alice"); !strings.Contains(out, "signed alice out") {
		t.Errorf("doorman gate signout alice: %s", out)
	}
	if r := get(t, alice, origin+"/admin/"); r.status != 200 || !strings.Contains(r.body, `id="gate"`) {
		t.Errorf("alice's /admin/ after signout: %d %.200q, want the gate page", r.status, r.body)
	}
	t.Logf("compose test done in %v", time.Since(start).Round(time.Second))
}

// postFailure is run by python3 in the app container: argv[1] the address,
// argv[2] the token ("" for none). It prints status=CODE and the body.
const postFailure = `
import json, sys, urllib.request, urllib.error
headers = {"Content-Type": "application/json"}
if sys.argv[2]:
    headers["Authorization"] = "Bearer " + sys.argv[2]
req = urllib.request.Request("http://doorman:9181/v1/failures", method="POST", headers=headers,
    data=json.dumps({"ip": sys.argv[1], "username": "admin"}).encode())
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print("status=%d %s" % (r.status, r.read().decode()))
except urllib.error.HTTPError as e:
    print("status=%d %s" % (e.code, e.read().decode()))
`

// composeTool returns the compose command: docker-compose, or the Compose v2
// plugin (docker compose) when only that is installed.
func composeTool(t *testing.T) []string {
	t.Helper()
	requireTool(t, "docker", "docker.io")
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	requireTool(t, "docker-compose", "docker-compose")
	return nil
}

// buildImages runs images.sh and returns its NAME=image lines.
func buildImages(t *testing.T, root string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "test", "compose", "images.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("images.sh: %v\n%s", err, stderr.String())
	}
	var vars []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if name, image, ok := strings.Cut(line, "="); ok && name != "" && image != "" {
			vars = append(vars, line)
		}
	}
	if len(vars) < 3 {
		t.Fatalf("images.sh printed %q, want NAME=image lines", out)
	}
	return vars
}

type response struct {
	status     int
	body       string
	retryAfter string
}

func get(t *testing.T, c *http.Client, url string) response {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, string(b), resp.Header.Get("Retry-After")}
}

// waitFor polls url until ok accepts the answer; connection errors count as
// not yet.
func waitFor(t *testing.T, c *http.Client, url string, timeout time.Duration, ok func(response) bool) response {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last response
	var lastErr error
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = response{resp.StatusCode, string(b), resp.Header.Get("Retry-After")}
			if ok(last) {
				return last
			}
		}
		lastErr = err
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("GET %s: no wanted answer within %v; last status %d body %.200q err %v", url, timeout, last.status, last.body, lastErr)
	return last
}

// freeSubnet picks a /24 in 172.30.0.0/16 that no docker network uses.
func freeSubnet(t *testing.T) netip.Prefix {
	t.Helper()
	out, err := exec.Command("sh", "-c",
		`docker network inspect --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' $(docker network ls -q)`).Output()
	if err != nil {
		t.Fatalf("docker network inspect: %v", err)
	}
	var used []netip.Prefix
	for _, f := range strings.Fields(string(out)) {
		if p, err := netip.ParsePrefix(f); err == nil {
			used = append(used, p)
		}
	}
	off := rand.IntN(256)
	for i := 0; i < 256; i++ {
		p := netip.MustParsePrefix(fmt.Sprintf("172.30.%d.0/24", (off+i)%256))
		clash := false
		for _, u := range used {
			clash = clash || u.Overlaps(p)
		}
		if !clash {
			return p
		}
	}
	t.Fatal("no free /24 in 172.30.0.0/16")
	return netip.Prefix{}
}

// freePort returns a loopback port that was free a moment ago; see
// testproc.FreePort.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := testproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// requireTool: as in the test package's harness (a separate package here).
func requireTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	if _, err := os.Stat(filepath.Join("/usr/sbin", name)); err == nil {
		return
	}
	testproc.Require(t, fmt.Sprintf("%s not found; install with: apt-get install %s", name, pkg))
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
