package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/testproc"
)

// Accounts end to end: address-rotating guesses lock the account, the real
// admin keeps its device cookie and its access, through the real nginx and
// the real Django admin; and locks and the device key survive kill -9.

// startDemoSite serves the Django demo at demoAddr behind nginx running
// nginx/site.conf.example, adapted as TestDjangoAdminBehindNginx adapts it;
// doorman's decision listener must be the shipped upstream, 127.0.0.1:9180.
func startDemoSite(t *testing.T, demoAddr string) *Nginx {
	t.Helper()
	example, err := os.ReadFile(filepath.Join(repoRoot(t), "nginx", "site.conf.example"))
	if err != nil {
		t.Fatal(err)
	}
	return startNginxHTTP(t, func(dir string, port int) string {
		return replaceAll(t, string(example), []string{
			"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port),
			"server 127.0.0.1:8000;", "server " + demoAddr + ";",
			"/etc/nginx/doorman/", dir + "/doorman/",
			"/var/log/nginx/app.access.log", dir + "/site.access.log",
		})
	})
}

// deviceCookie returns the doorman_device cookie b holds for base, or nil.
func (b *browser) deviceCookie(base string) *http.Cookie {
	u, _ := url.Parse(base + "/admin/")
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == "doorman_device" {
			return c
		}
	}
	return nil
}

// TestAccountsBehindNginx is the scenario with every real part:
// nginx with the shipped snippets, doorman, and the demo's Django admin with
// DoormanBackend first and DoormanDeviceMiddleware.
func TestAccountsBehindNginx(t *testing.T) {
	requireDjango(t)
	requireTool(t, "nginx", "nginx")
	lockFixedPorts(t)
	const token = "accounts-e2e-token"
	d := startDoorman(t, map[string]string{
		"DOORMAN_DECIDE_ADDR":          "127.0.0.1:9180", // the shipped upstream
		"DOORMAN_ALLOW":                "127.0.0.0/25",
		"DOORMAN_MAX_FAILURES":         "3", // per address: one failure each stays far below
		"DOORMAN_ACCOUNT_MAX_FAILURES": "7",
		"DOORMAN_API_TOKEN":            token,
	})
	demo := startDjangoDemo(t, map[string]string{
		"DOORMAN_API_URL":         "http://" + d.APIAddr,
		"DOORMAN_API_TOKEN":       token,
		"DOORMAN_TRUSTED_PROXIES": "127.0.0.1/32", // nginx connects from 127.0.0.1
	})
	// A second account, in the demo's database.
	addUser := exec.Command(djangoPython, "manage.py", "demo_superuser")
	addUser.Dir = filepath.Join(repoRoot(t), "examples", "django", "demo")
	addUser.Env = pythonEnv(map[string]string{"DEMO_DB": filepath.Join(filepath.Dir(demo.LogPath), "db.sqlite3"),
		"DEMO_ADMIN_USER": "alice", "DEMO_ADMIN_PASSWORD": demoPassword + " alice"})
	if out, err := addUser.CombinedOutput(); err != nil {
		t.Fatalf("creating alice: %v\n%s", err, out)
	}
	base := startDemoSite(t, demo.Addr).URL("")
	signedIn := func(name string, b *browser) {
		t.Helper()
		if status, body := b.do("GET", "/admin/", nil); status != http.StatusOK || !strings.Contains(body, adminIndex) {
			t.Fatalf("%s: GET /admin/ %d %.300q, want the admin index", name, status, body)
		}
	}
	refused := func(name string, status int, body string) {
		t.Helper()
		if status != http.StatusOK || !strings.Contains(body, loginFailed) {
			t.Fatalf("%s: %d %.300q, want 200 with the login form's error", name, status, body)
		}
	}

	// 1. The real admin logs in once from its own address and keeps the
	// device cookie.
	admin := newBrowser(t, "127.0.0.20", base)
	if status, body := admin.login("admin", demoPassword); status != http.StatusFound {
		t.Fatalf("admin's first login: %d %.300q, want 302", status, body)
	}
	cookie := admin.deviceCookie(base)
	if cookie == nil || len(cookie.Value) != 66 {
		t.Fatalf("no device cookie after the admin's login (cookie %v)", cookie)
	}

	// 2. Seven addresses try one wrong password each: under the per-address
	// threshold, so no address is banned, but the account is locked.
	for i := range 7 {
		ip := fmt.Sprintf("127.0.0.%d", 31+i)
		status, body := newBrowser(t, ip, base).login("admin", "guess"+ip)
		refused("wrong password from "+ip, status, body)
	}
	if code, body := d.API(t, "GET", "/v1/bans", nil); code != 200 || strings.Contains(string(body), "127.0.0.3") {
		t.Errorf("an address was banned: %d %s", code, body)
	}
	if log := d.Log(t); !strings.Contains(log, "msg=lock username=admin ") {
		t.Fatalf("doorman did not log the lock of admin:\n%s", tail(log, 30))
	}

	// 3. The right password from a new address is refused, with the same
	// form as a wrong one.
	newcomer := newBrowser(t, "127.0.0.40", base)
	status, body := newcomer.login("admin", demoPassword)
	refused("right password from a new address", status, body)

	// 4. The admin with its cookie still logs in, from yet another address
	// (a session with nothing but the cookie).
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(base + "/")
	jar.SetCookies(u, []*http.Cookie{{Name: cookie.Name, Value: cookie.Value, Path: "/"}})
	travelling := newBrowser(t, "127.0.0.41", base)
	travelling.c.Jar = jar
	if status, body := travelling.login("admin", demoPassword); status != http.StatusFound {
		t.Fatalf("admin with its device cookie: %d %.300q, want 302", status, body)
	}
	signedIn("admin with its device cookie", travelling)

	// 5. Another account is unaffected.
	other := newBrowser(t, "127.0.0.42", base)
	if status, body := other.login("alice", demoPassword+" alice"); status != http.StatusFound {
		t.Fatalf("alice: %d %.300q, want 302", status, body)
	}
	signedIn("alice", other)

	// 6. doorman accounts lists the lock; doorman unlock admin lifts it and
	// the new address gets in.
	cli := func(args ...string) string {
		t.Helper()
		code, out, err := testproc.RunDoorman(append([]string{doormanBinary(t)}, args...), t.TempDir(),
			map[string]string{"DOORMAN_API_ADDR": d.APIAddr, "DOORMAN_API_TOKEN": token}, 10*time.Second)
		if err != nil || code != 0 {
			t.Fatalf("doorman %s: exit %d, %v\n%s", strings.Join(args, " "), code, err, out)
		}
		return out
	}
	if out := cli("accounts"); !strings.Contains(out, "USERNAME") || !strings.Contains(out, "\nadmin ") {
		t.Errorf("doorman accounts:\n%s", out)
	}
	if out := cli("unlock", "admin"); strings.TrimSpace(out) != "unlocked admin" {
		t.Errorf("doorman unlock admin: %q", out)
	}
	if out := cli("accounts"); strings.Contains(out, "admin") {
		t.Errorf("doorman accounts after unlock:\n%s", out)
	}
	newcomer = newBrowser(t, "127.0.0.40", base)
	if status, body := newcomer.login("admin", demoPassword); status != http.StatusFound {
		t.Fatalf("new address after doorman unlock: %d %.300q, want 302", status, body)
	}
	signedIn("new address after unlock", newcomer)
}

// TestAccountsSurviveKill: a lock acknowledged by /v1/failures and the
// device key behind a token acknowledged by /v1/successes are back after
// kill -9.
func TestAccountsSurviveKill(t *testing.T) {
	d := startDoorman(t, map[string]string{"DOORMAN_ACCOUNT_MAX_FAILURES": "4"})
	api := func(method, path string, body any) map[string]any {
		t.Helper()
		code, b := d.API(t, method, path, body)
		var out map[string]any
		if code != 200 || json.Unmarshal(b, &out) != nil {
			t.Fatalf("%s %s: %d %s", method, path, code, b)
		}
		return out
	}
	tok, _ := api("POST", "/v1/successes", map[string]string{"ip": "192.0.2.1", "username": "admin"})["device"].(string)
	if tok == "" {
		t.Fatal("no device token")
	}
	var until any
	for i := range 4 {
		out := api("POST", "/v1/failures", map[string]string{"ip": fmt.Sprintf("198.51.100.%d", i+1), "username": "Admin"})
		until = out["account"].(map[string]any)["until"]
	}
	if until == nil {
		t.Fatal("the account was not locked")
	}
	d.Kill(t)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if out := api("POST", "/v1/attempts", map[string]string{"ip": "203.0.113.1", "username": "admin"}); out["allow"] != false || out["reason"] != "account-locked" {
		t.Errorf("after kill -9, no token: %v, want account-locked", out)
	}
	if out := api("POST", "/v1/attempts", map[string]string{"ip": "203.0.113.1", "username": "admin", "device": tok}); out["allow"] != true {
		t.Errorf("after kill -9, the token issued before: %v, want allow", out)
	}
	list := api("GET", "/v1/accounts", nil)["accounts"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["until"] != until {
		t.Errorf("GET /v1/accounts after kill -9: %v, want admin until %v", list, until)
	}
}
