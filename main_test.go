package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
	"github.com/doorman/doorman/internal/testproc"
)

// TestMain lets the tests start this test binary as doorman itself.
func TestMain(m *testing.M) {
	if os.Getenv("DOORMAN_TEST_EXEC") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// startDoorman runs this test binary as doorman (see TestMain) with env on
// top of the inherited environment less its DOORMAN_* variables, and waits
// for /healthz; t.Cleanup stops it. See testproc.StartDoorman.
func startDoorman(t *testing.T, env map[string]string) *testproc.Doorman {
	t.Helper()
	e := map[string]string{"DOORMAN_TEST_EXEC": "1"}
	for k, v := range env {
		e[k] = v
	}
	d, err := testproc.StartDoorman([]string{os.Args[0]}, t.TempDir(), e)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(syscall.SIGTERM); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("doorman log:\n%s", d.Log())
		}
	})
	return d
}

// verdict returns the decision listener's status for a request that nginx
// sends for ip.
func verdict(t *testing.T, d *testproc.Doorman, ip string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+d.DecideAddr+"/decide", nil)
	req.Header.Set("X-Real-IP", ip)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestSIGHUPReloadsListFiles(t *testing.T) {
	dir := t.TempDir()
	deny := filepath.Join(dir, "deny.txt")
	os.WriteFile(deny, []byte("192.0.2.0/24\n"), 0o644)
	d := startDoorman(t, map[string]string{"DOORMAN_STATE_FILE": "", "DOORMAN_DENY_FILE": deny, "DOORMAN_DENY": "203.0.113.1"})
	if verdict(t, d, "192.0.2.5") != 403 || verdict(t, d, "198.51.100.5") != 204 || verdict(t, d, "203.0.113.1") != 403 {
		t.Fatal("initial lists not in force")
	}
	waitFor := func(ip string, want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for verdict(t, d, ip) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: never %d\n%s", ip, want, d.Log())
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
			req, _ := http.NewRequest("GET", "http://"+d.DecideAddr+"/", nil)
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
	d.Cmd.Process.Signal(syscall.SIGHUP)
	waitFor("198.51.100.5", 403)
	waitFor("192.0.2.5", 204)

	// A bad line keeps the old table.
	os.WriteFile(deny, []byte("192.0.2.0/24\n10.0.0.0/99\n"), 0o644)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(d.Log(), deny+`:2: \"10.0.0.0/99\"`) {
		if time.Now().After(deadline) {
			t.Fatalf("bad reload not logged:\n%s", d.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if verdict(t, d, "198.51.100.5") != 403 || verdict(t, d, "192.0.2.5") != 204 {
		t.Fatal("a bad file replaced the lists in force")
	}
	close(stop)
	if msg, ok := <-failed; ok {
		t.Fatalf("a decision failed during reload: %s", msg)
	}
}

func TestGracefulShutdown(t *testing.T) {
	d := startDoorman(t, map[string]string{"DOORMAN_STATE_FILE": ""})
	if err := d.Stop(syscall.SIGTERM); err != nil { // within testproc.StopGrace, 10 s
		t.Fatal(err)
	}
	if st := d.Cmd.ProcessState; !st.Success() {
		t.Fatalf("exit after SIGTERM: %v, want status 0", st)
	}
	if !strings.Contains(d.Log(), "shutting down") {
		t.Fatalf("no shutdown line:\n%s", d.Log())
	}
}

func TestBadConfigExitsTwo(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"DOORMAN_ALLOW=10.0.0.0/33", `DOORMAN_ALLOW: "10.0.0.0/33" is not an IP or CIDR`},
		{"DOORMAN_BAN_TIME=soon", `DOORMAN_BAN_TIME: "soon" is not a valid duration`},
		{"DOORMAN_API_ADDR=0.0.0.0:9181", `DOORMAN_API_ADDR: "0.0.0.0:9181" is neither loopback nor a unix socket`},
		{"DOORMAN_REDIS_URL=redis://:s3cret@127.0.0.1:6379/notadb", `DOORMAN_REDIS_URL: "(hidden: it may hold a password)" redis: invalid database number`},
		{"DOORMAN_LEARN_RULES=joomla /login", `DOORMAN_LEARN_RULES: "joomla /login" is invalid: "joomla /login": unknown preset "joomla"`},
		{"DOORMAN_LEARN_RULES=django admin/login/", `DOORMAN_LEARN_RULES: "django admin/login/" is invalid: "django admin/login/": the path is not absolute`},
		{"DOORMAN_LEARN_RULES=django /a/; status /a/", `"status /a/": /a/ given twice`},
		{"DOORMAN_LEARN_ADDR=udp:0.0.0.0:9183", `DOORMAN_LEARN_ADDR: "udp:0.0.0.0:9183" is set but DOORMAN_LEARN_RULES names no login form`},
	} {
		k, v, _ := strings.Cut(tc.env, "=")
		for _, args := range [][]string{nil, {"bans"}, {"check", "192.0.2.1"}} {
			dir := t.TempDir()
			code, out, err := testproc.RunDoorman(append([]string{os.Args[0]}, args...), dir,
				map[string]string{"DOORMAN_TEST_EXEC": "1", k: v}, 15*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if code != 2 {
				t.Errorf("%s %v: exit %d, want 2", tc.env, args, code)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("%s %v: output %q lacks %q", tc.env, args, out, tc.want)
			}
			if strings.Contains(string(out), "s3cret") {
				t.Errorf("%s %v: output %q shows the password", tc.env, args, out)
			}
			if _, err := os.Stat(filepath.Join(dir, "doorman.db")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s %v: the state file was touched before the start was refused (stat: %v)", tc.env, args, err)
			}
		}
	}
}

func TestCLI(t *testing.T) {
	d := startDoorman(t, map[string]string{"DOORMAN_STATE_FILE": "", "DOORMAN_API_TOKEN": "tok"})
	env := func(k string) (string, bool) {
		switch k {
		case "DOORMAN_API_ADDR":
			return d.APIAddr, true
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
	if verdict(t, d, "203.0.113.77") != 403 {
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

// TestConfigDocEnvTable keeps docs/config.md's variable table equal to `doorman env -markdown`.
func TestConfigDocEnvTable(t *testing.T) {
	readme, err := os.ReadFile("docs/config.md")
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
		t.Fatalf("docs/config.md's table between the env markers differs from `doorman env -markdown`:\n%s", want.String())
	}
}

// A bad notification variable refuses the start before the state file is
// touched: not created, not opened (so not cleaned up), not moved aside.
func TestBadNotifyConfigLeavesStateFile(t *testing.T) {
	states := []struct {
		name    string
		prepare func(t *testing.T, path string)
		reset   bool
	}{
		{"missing", func(*testing.T, string) {}, false},
		{"earlier state", func(t *testing.T, path string) {
			st, err := store.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			for _, b := range []decide.Ban{
				{Key: netip.MustParsePrefix("203.0.113.7/32"), Until: now.Add(time.Hour), Count: 1, Failures: 5},
				{Key: netip.MustParsePrefix("203.0.113.8/32"), Until: now.Add(-time.Hour), Count: 1, Failures: 5}, // a start would clean it up
			} {
				if err := st.Put(b); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"unreadable, with DOORMAN_STATE_RESET", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("not a state file\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	bad := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"format", map[string]string{"DOORMAN_NOTIFY_URL": "http://127.0.0.1:1/hook", "DOORMAN_NOTIFY_FORMAT": "slak"}, `DOORMAN_NOTIFY_FORMAT: "slak" must be json or slack`},
		{"url", map[string]string{"DOORMAN_NOTIFY_URL": "hooks.example/x"}, `DOORMAN_NOTIFY_URL: "hooks.example/x" is not an http:// or https:// URL`},
		{"proxy", map[string]string{"DOORMAN_NOTIFY_URL": "http://127.0.0.1:1/hook", "DOORMAN_NOTIFY_PROXY": "proxy:3128"}, `DOORMAN_NOTIFY_PROXY: "proxy:3128" is not an http:// or https:// URL`},
	}
	for _, s := range states {
		for _, b := range bad {
			t.Run(s.name+"/"+b.name, func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "doorman.db")
				s.prepare(t, path)
				before := snapshot(t, dir)
				env := map[string]string{"DOORMAN_STATE_FILE": path, "DOORMAN_STATE_RESET": fmt.Sprint(s.reset),
					"DOORMAN_DECIDE_ADDR": "127.0.0.1:0", "DOORMAN_API_ADDR": "127.0.0.1:0"}
				maps.Copy(env, b.env)
				// Should it start after all, it stops after 10 s and fails the exit check.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				var stderr bytes.Buffer
				err := run(ctx, nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard, &stderr)
				if code := exitCode(err); code != 2 || !strings.Contains(err.Error(), b.want) {
					t.Errorf("run: exit %d, %v; want 2 and %q\n%s", code, err, b.want, stderr.String())
				}
				if after := snapshot(t, dir); !maps.EqualFunc(before, after, bytes.Equal) {
					t.Errorf("state directory changed:\n before %v\n after  %v", names(before), names(after))
				}
			})
		}
	}
}

// snapshot returns every file of dir and its bytes.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func names(m map[string][]byte) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s (%d bytes)", k, len(v)))
	}
	slices.Sort(out)
	return out
}
