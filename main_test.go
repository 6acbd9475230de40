package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the tests start this test binary as doorman itself.
func TestMain(m *testing.M) {
	if os.Getenv("DOORMAN_TEST_EXEC") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// freeAddr returns a loopback address that was free a moment ago, below
// Linux's ephemeral port range so no outgoing connection takes it meanwhile.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

type proc struct {
	cmd    *exec.Cmd
	env    []string
	api    string
	decide string
	log    *bytes.Buffer
}

// start runs doorman with env (DOORMAN_* pairs) and waits for /healthz.
func start(t *testing.T, env ...string) *proc {
	t.Helper()
	p := &proc{api: freeAddr(t), decide: freeAddr(t), log: new(bytes.Buffer)}
	p.env = append([]string{"DOORMAN_TEST_EXEC=1", "DOORMAN_API_ADDR=" + p.api, "DOORMAN_DECIDE_ADDR=" + p.decide}, env...)
	p.run(t)
	return p
}

func (p *proc) run(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(os.Args[0])
	p.cmd.Env = p.env
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + p.api + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("doorman did not become healthy:\n%s", p.log)
}

func (p *proc) post(t *testing.T, path, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post("http://"+p.api+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (p *proc) verdict(t *testing.T, ip string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.decide+"/decide", nil)
	req.Header.Set("X-Real-IP", ip)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestKill9KeepsAcknowledgedBans(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.db")
	p := start(t, "DOORMAN_STATE_FILE="+state, "DOORMAN_MAX_FAILURES=2", "DOORMAN_LOG_LEVEL=warn")
	var acked []string
	for i := range 200 {
		ip := fmt.Sprintf("198.51.%d.%d", i/250, i%250+1)
		for range 2 {
			if status, out := p.post(t, "/v1/failures", `{"ip":"`+ip+`"}`); status != 200 {
				t.Fatalf("%s: %d %v", ip, status, out)
			} else if out["banned"] == true {
				acked = append(acked, ip)
			}
		}
	}
	if status, _ := p.post(t, "/v1/bans", `{"ip":"2001:db8::/48","duration":"2h"}`); status != 201 {
		t.Fatalf("manual ban: %d", status)
	}
	// A ban that expires while doorman is down must not come back.
	if status, _ := p.post(t, "/v1/bans", `{"ip":"192.0.2.1","duration":"1s"}`); status != 201 {
		t.Fatal("short ban not acknowledged")
	}
	// It is still in the state file when it runs out.
	deadline := time.Now().Add(5 * time.Second)
	for p.verdict(t, "192.0.2.1") != 204 {
		if time.Now().After(deadline) {
			t.Fatal("1 s ban never ran out")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()

	p.run(t)
	for _, ip := range append(acked, "2001:db8:0:ffff::1") {
		if got := p.verdict(t, ip); got != 403 {
			t.Fatalf("after kill -9: %s gets %d, want 403", ip, got)
		}
	}
	if len(acked) != 200 {
		t.Fatalf("%d bans acknowledged, want 200", len(acked))
	}
	if got := p.verdict(t, "192.0.2.1"); got != 204 {
		t.Fatalf("expired ban came back: %d", got)
	}
}

func TestSIGHUPReloadsListFiles(t *testing.T) {
	dir := t.TempDir()
	deny := filepath.Join(dir, "deny.txt")
	os.WriteFile(deny, []byte("192.0.2.0/24\n"), 0o644)
	p := start(t, "DOORMAN_STATE_FILE=", "DOORMAN_DENY_FILE="+deny, "DOORMAN_DENY=203.0.113.1")
	if p.verdict(t, "192.0.2.5") != 403 || p.verdict(t, "198.51.100.5") != 204 || p.verdict(t, "203.0.113.1") != 403 {
		t.Fatal("initial lists not in force")
	}
	waitFor := func(ip string, want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for p.verdict(t, ip) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: never %d\n%s", ip, want, p.log)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Decisions keep flowing while the file changes and reloads.
	stop := make(chan struct{})
	failed := make(chan string, 1)
	go func() {
		for {
			select {
			case <-stop:
				close(failed)
				return
			default:
			}
			req, _ := http.NewRequest("GET", "http://"+p.decide+"/", nil)
			req.Header.Set("X-Real-IP", "203.0.113.1")
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 403 {
				failed <- fmt.Sprint(resp, err)
				return
			}
			resp.Body.Close()
		}
	}()
	os.WriteFile(deny, []byte("# moved\n198.51.100.0/24\n"), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor("198.51.100.5", 403)
	waitFor("192.0.2.5", 204)

	// A bad line keeps the old table.
	os.WriteFile(deny, []byte("192.0.2.0/24\n10.0.0.0/99\n"), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.log.String(), deny+`:2: \"10.0.0.0/99\"`) {
		if time.Now().After(deadline) {
			t.Fatalf("bad reload not logged:\n%s", p.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.verdict(t, "198.51.100.5") != 403 || p.verdict(t, "192.0.2.5") != 204 {
		t.Fatal("a bad file replaced the lists in force")
	}
	close(stop)
	if msg, ok := <-failed; ok {
		t.Fatalf("a decision failed during reload: %s", msg)
	}
}

func TestGracefulShutdown(t *testing.T) {
	p := start(t, "DOORMAN_STATE_FILE=")
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.log)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10 s after SIGTERM")
	}
	if !strings.Contains(p.log.String(), "shutting down") {
		t.Fatalf("no shutdown line:\n%s", p.log)
	}
}

func TestBadConfigExitsTwo(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"DOORMAN_ALLOW=10.0.0.0/33", `DOORMAN_ALLOW: "10.0.0.0/33" is not an IP or CIDR`},
		{"DOORMAN_BAN_TIME=soon", `DOORMAN_BAN_TIME: "soon" is not a valid duration`},
		{"DOORMAN_API_ADDR=0.0.0.0:9181", `DOORMAN_API_ADDR: "0.0.0.0:9181" is neither loopback nor a unix socket`},
	} {
		for _, args := range [][]string{nil, {"bans"}, {"check", "192.0.2.1"}} {
			cmd := exec.Command(os.Args[0], args...)
			cmd.Env = []string{"DOORMAN_TEST_EXEC=1", tc.env}
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
				t.Errorf("%s %v: err %v, want exit 2", tc.env, args, err)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("%s %v: output %q lacks %q", tc.env, args, out, tc.want)
			}
		}
	}
}

func TestCLI(t *testing.T) {
	p := start(t, "DOORMAN_STATE_FILE=", "DOORMAN_API_TOKEN=tok")
	env := func(k string) (string, bool) {
		switch k {
		case "DOORMAN_API_ADDR":
			return p.api, true
		case "DOORMAN_API_TOKEN":
			return "tok", true
		case "DOORMAN_STATE_FILE":
			return "", true
		}
		return "", false
	}
	cli := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := run(context.Background(), args, env, &out, &errb)
		return out.String(), err
	}
	if out, err := cli("ban", "203.0.113.0/24", "-for", "2h", "-reason", "scanner"); err != nil || !strings.Contains(out, "banned 203.0.113.0/24 until") {
		t.Fatalf("ban: %q %v", out, err)
	}
	if out, err := cli("ban", "-for", "1h", "192.0.2.9"); err != nil || !strings.Contains(out, "banned 192.0.2.9/32") {
		t.Fatalf("ban with flag first: %q %v", out, err)
	}
	if out, err := cli("bans"); err != nil || !strings.Contains(out, "203.0.113.0/24") || !strings.Contains(out, "scanner") || !strings.Contains(out, "192.0.2.9/32") {
		t.Fatalf("bans: %q %v", out, err)
	}
	if out, err := cli("check", "203.0.113.77"); err != nil || !strings.Contains(out, "deny (banned) key 203.0.113.0/24") {
		t.Fatalf("check: %q %v", out, err)
	}
	if p.verdict(t, "203.0.113.77") != 403 {
		t.Fatal("CLI ban not in force")
	}
	if _, err := cli("unban", "203.0.113.77"); err != nil {
		t.Fatalf("unban: %v", err)
	}
	if out, err := cli("check", "203.0.113.77"); err != nil || !strings.Contains(out, "allow (allowed)") {
		t.Fatalf("check after unban: %q %v", out, err)
	}
	if _, err := cli("unban", "203.0.113.77"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("second unban: %v, want a 404 error", err)
	}
	if _, err := cli("health"); err != nil {
		t.Fatalf("health: %v", err)
	}
	if _, err := cli("ban"); exitCode(err) != 2 {
		t.Fatalf("ban without target: %v, want a usage error", err)
	}
	if out, err := cli("env"); err != nil || !strings.Contains(out, "DOORMAN_MAX_FAILURES") {
		t.Fatalf("env: %q %v", out, err)
	}
}

// TestREADMEEnvTable keeps the README's variable table equal to `doorman env -markdown`.
func TestREADMEEnvTable(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := run(context.Background(), []string{"env", "-markdown"}, nil, &want, nil); err != nil {
		t.Fatal(err)
	}
	_, rest, ok1 := strings.Cut(string(readme), "<!-- env:start -->\n")
	got, _, ok2 := strings.Cut(rest, "<!-- env:end -->")
	if !ok1 || !ok2 || got != want.String() {
		t.Fatalf("README.md's table between the env markers differs from `doorman env -markdown`:\n%s", want.String())
	}
}
