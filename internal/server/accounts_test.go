package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// accountFixture is the API with accounts on: 4 failures of one account lock
// it for 15m; 2 failures with a device token lock the token. Addresses are
// banned after 3 failures, as in newFixture.
func accountFixture(t testing.TB, deny string, log io.Writer) (*fixture, *engine.Accounts) {
	t.Helper()
	f := newFixture(t, "", deny)
	l := slog.New(slog.NewTextHandler(log, nil))
	local := engine.NewLocal(f.core, nil, l, f.metrics)
	acc, _, err := engine.NewAccounts(engine.AccountOptions{
		Policy: decide.AccountPolicy{MaxFailures: 4, FindTime: time.Hour, LockTime: 15 * time.Minute, LockFactor: 2,
			MaxLockTime: 168 * time.Hour, DeviceMaxFailures: 2},
		Max: 1000, Key: bytes.Repeat([]byte("k"), 32), TTL: 720 * time.Hour, Now: func() time.Time { return f.now }}, local)
	if err != nil {
		t.Fatal(err)
	}
	f.api.Service, f.api.Accounts, f.api.Log = local, acc, l
	return f, acc
}

func body(kv ...any) string {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// login posts a success for user from ip and returns the device token issued.
func (f *fixture) login(t *testing.T, ip, user string) string {
	t.Helper()
	code, out := f.apiReq("POST", "/v1/successes", body("ip", ip, "username", user))
	tok, _ := out["device"].(string)
	exp, _ := out["device_expires"].(string)
	if code != 200 || len(tok) != decide.DeviceTokenLen || exp == "" {
		t.Fatalf("success of %s: %d %v, want a device token", user, code, out)
	}
	if want := f.now.Add(720 * time.Hour).UTC().Format(time.RFC3339); exp != want {
		t.Errorf("device_expires = %s, want %s", exp, want)
	}
	return tok
}

func (f *fixture) attempt(t *testing.T, kv ...any) map[string]any {
	t.Helper()
	code, out := f.apiReq("POST", "/v1/attempts", body(kv...))
	if code != 200 {
		t.Fatalf("attempt %v: %d %v", kv, code, out)
	}
	return out
}

func TestAccountLockAcrossAddresses(t *testing.T) {
	var log bytes.Buffer
	f, _ := accountFixture(t, "", &log)
	admin := f.login(t, "192.0.2.1", "admin")

	// Four addresses, one failure each, under the per-address threshold;
	// the username as typed varies, the account does not.
	for i, name := range []string{"admin", "Admin", "ADMIN ", "ａｄｍｉｎ"} {
		f.now = f.now.Add(time.Second)
		code, out := f.apiReq("POST", "/v1/failures", body("ip", fmt.Sprintf("203.0.113.%d", i+1), "username", name))
		acct, _ := out["account"].(map[string]any)
		if code != 200 || out["banned"] != false || acct == nil || acct["username"] != "admin" || acct["failures"] != float64(i+1) {
			t.Fatalf("failure %d as %q: %d %v", i+1, name, code, out)
		}
		if locked := acct["locked"] == true; locked != (i == 3) {
			t.Fatalf("failure %d: locked %v", i+1, acct["locked"])
		}
		if i == 3 && acct["until"] != f.now.Add(15*time.Minute).UTC().Format(time.RFC3339) {
			t.Errorf("until = %v, want 15m from now", acct["until"])
		}
	}
	if !strings.Contains(log.String(), "msg=lock username=admin until=") {
		t.Errorf("no lock line in the log:\n%s", log.String())
	}

	tests := []struct {
		name   string
		req    []any
		allow  bool
		reason string
	}{
		{"new address, no token", []any{"ip", "198.51.100.9", "username", "admin"}, false, "account-locked"},
		{"new address, the admin's token", []any{"ip", "198.51.100.9", "username", "admin", "device", admin}, true, ""},
		{"the token with the name typed otherwise", []any{"ip", "198.51.100.9", "username", "ADMIN", "device", admin}, true, ""},
		{"another account", []any{"ip", "198.51.100.9", "username", "alice"}, true, ""},
		{"another account with the admin's token", []any{"ip", "198.51.100.9", "username", "alice", "device", admin}, true, ""},
		{"no username", []any{"ip", "198.51.100.9"}, true, ""},
		{"forged token", []any{"ip", "198.51.100.9", "username", "admin", "device", strings.Repeat("A", decide.DeviceTokenLen)}, false, "account-locked"},
		{"garbage token", []any{"ip", "198.51.100.9", "username", "admin", "device", "x"}, false, "account-locked"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := f.attempt(t, tc.req...)
			if out["allow"] != tc.allow || tc.reason != "" && out["reason"] != tc.reason {
				t.Errorf("attempt = %v, want allow %v reason %q", out, tc.allow, tc.reason)
			}
			if !tc.allow && out["retry_after"] != float64(15*60) {
				t.Errorf("retry_after = %v, want %d", out["retry_after"], 15*60)
			}
		})
	}

	// A success does not unlock the account for clients without a token.
	f.login(t, "192.0.2.1", "admin")
	if out := f.attempt(t, "ip", "198.51.100.9", "username", "admin"); out["allow"] != false {
		t.Errorf("after a success: %v, want still locked", out)
	}

	// GET /v1/accounts lists it; DELETE unlocks it and forgets its count.
	code, out := f.apiReq("GET", "/v1/accounts", "")
	list, _ := out["accounts"].([]any)
	if code != 200 || len(list) != 1 || list[0].(map[string]any)["username"] != "admin" || list[0].(map[string]any)["failures"] != float64(4) {
		t.Fatalf("GET /v1/accounts: %d %v", code, out)
	}
	if code, out := f.apiReq("DELETE", "/v1/accounts/"+url.PathEscape("ＡＤＭＩＮ"), ""); code != 204 {
		t.Fatalf("DELETE: %d %v", code, out)
	}
	if code, _ := f.apiReq("DELETE", "/v1/accounts/admin", ""); code != 404 {
		t.Errorf("second DELETE: %d, want 404", code)
	}
	if out := f.attempt(t, "ip", "198.51.100.9", "username", "admin"); out["allow"] != true {
		t.Errorf("after DELETE: %v", out)
	}
	if code, out := f.apiReq("GET", "/v1/accounts", ""); code != 200 || len(out["accounts"].([]any)) != 0 {
		t.Errorf("GET after DELETE: %d %v", code, out)
	}
}

func TestAttemptAddressVerdicts(t *testing.T) {
	f, _ := accountFixture(t, "203.0.113.0/24", io.Discard)
	for range 3 {
		f.apiReq("POST", "/v1/failures", body("ip", "198.51.100.7"))
	}
	tests := []struct {
		ip, reason string
		retry      bool
	}{
		{"203.0.113.5", "denylisted", false},
		{"198.51.100.7", "banned", true},
		{"::ffff:198.51.100.7", "banned", true},
		{"198.51.100.8", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			out := f.attempt(t, "ip", tc.ip, "username", "bob")
			if got := out["allow"] == true; got != (tc.reason == "") {
				t.Fatalf("attempt = %v", out)
			}
			if tc.reason != "" && out["reason"] != tc.reason {
				t.Errorf("reason = %v, want %s", out["reason"], tc.reason)
			}
			if _, ok := out["retry_after"]; ok != tc.retry || tc.retry && out["retry_after"] != float64(3600) {
				t.Errorf("retry_after = %v, want present %v (3600)", out["retry_after"], tc.retry)
			}
		})
	}
	// Attempts count nothing.
	for range 10 {
		f.attempt(t, "ip", "198.51.100.8", "username", "bob")
	}
	if out := f.attempt(t, "ip", "198.51.100.8", "username", "bob"); out["allow"] != true {
		t.Errorf("attempts counted: %v", out)
	}
	var m bytes.Buffer
	f.metrics.Write(&m)
	for _, series := range []string{`doorman_account_attempts_total{result="banned"} 2`, `doorman_account_attempts_total{result="denylisted"} 1`,
		`doorman_account_attempts_total{result="allow"} 12`} {
		if !strings.Contains(m.String(), series+"\n") {
			t.Errorf("metrics lack %s", series)
		}
	}
}

func TestDeviceTokenFailureLimit(t *testing.T) {
	f, _ := accountFixture(t, "", io.Discard)
	tok := f.login(t, "192.0.2.1", "admin")
	for i := range 4 {
		f.apiReq("POST", "/v1/failures", body("ip", fmt.Sprintf("203.0.113.%d", i+1), "username", "admin"))
	}
	// Two failures with the token count against it, not the account.
	for i := range 2 {
		code, out := f.apiReq("POST", "/v1/failures", body("ip", "192.0.2.1", "username", "admin", "device", tok))
		if code != 200 || out["account"].(map[string]any)["failures"] != float64(4) {
			t.Fatalf("failure %d with the token: %d %v", i+1, code, out)
		}
	}
	out := f.attempt(t, "ip", "192.0.2.1", "username", "admin", "device", tok)
	if out["allow"] != false || out["reason"] != "device-locked" {
		t.Fatalf("after 2 failures with the token: %v, want device-locked", out)
	}
	// Past the token's lock (and the account's), it exempts again.
	f.now = f.now.Add(15*time.Minute + time.Second)
	for i := range 4 {
		f.apiReq("POST", "/v1/failures", body("ip", fmt.Sprintf("203.0.113.%d", i+10), "username", "admin"))
	}
	if out := f.attempt(t, "ip", "192.0.2.1", "username", "admin", "device", tok); out["allow"] != true {
		t.Errorf("after the token's lock time: %v", out)
	}
	// The relock escalated: 30 minutes.
	if out := f.attempt(t, "ip", "198.51.100.1", "username", "admin"); out["retry_after"] != float64(30*60) {
		t.Errorf("second lock: %v, want retry_after 1800", out)
	}
}

func TestAccountBadInput(t *testing.T) {
	f, _ := accountFixture(t, "", io.Discard)
	long := strings.Repeat("a", 257)
	grows := strings.Repeat("\uFDFA", 20) // 60 bytes that NFKC makes 660
	tests := []struct {
		name, method, uri, body string
		want                    int
	}{
		{"failure, username too long", "POST", "/v1/failures", body("ip", "192.0.2.1", "username", long), 400},
		{"failure, username grows too long", "POST", "/v1/failures", body("ip", "192.0.2.1", "username", grows), 400},
		{"failure, username not a string", "POST", "/v1/failures", `{"ip":"192.0.2.1","username":5}`, 400},
		{"failure, device not a string", "POST", "/v1/failures", `{"ip":"192.0.2.1","username":"a","device":[]}`, 400},
		{"attempt, username too long", "POST", "/v1/attempts", body("ip", "192.0.2.1", "username", long), 400},
		{"attempt, no ip", "POST", "/v1/attempts", body("username", "a"), 400},
		{"attempt, unknown field", "POST", "/v1/attempts", `{"ip":"192.0.2.1","password":"x"}`, 400},
		{"attempt, GET", "GET", "/v1/attempts", "", 405},
		{"success, username too long", "POST", "/v1/successes", body("ip", "192.0.2.1", "username", long), 400},
		{"accounts, POST", "POST", "/v1/accounts", "{}", 405},
		{"unlock, GET", "GET", "/v1/accounts/admin", "", 405},
		{"unlock, empty", "DELETE", "/v1/accounts/", "", 400},
		{"unlock, too long", "DELETE", "/v1/accounts/" + long, "", 400},
		{"unlock, bad escape", "DELETE", "/v1/accounts/%zz", "", 400},
		{"unlock, unknown", "DELETE", "/v1/accounts/nobody", "", 404},
		{"unlock, slash in the name", "DELETE", "/v1/accounts/a%2F..%2Fb", "", 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := f.apiReq(tc.method, tc.uri, tc.body)
			if code != tc.want {
				t.Errorf("%s %s: %d %v, want %d", tc.method, tc.uri, code, out, tc.want)
			}
		})
	}
	// Bad input changed nothing: no failure of 192.0.2.1, no account.
	if s := f.core.Stats(f.now); s.Tracked != 0 {
		t.Errorf("%d addresses tracked after bad requests", s.Tracked)
	}
	if s := f.api.Service.Memory().Accounts().Stats(f.now); s.Tracked != 0 {
		t.Errorf("%d accounts tracked after bad requests", s.Tracked)
	}
	// A username with a slash is one path segment when escaped.
	for range 4 {
		f.apiReq("POST", "/v1/failures", body("ip", "192.0.2.2", "username", "a/../b"))
	}
	if code, out := f.apiReq("DELETE", "/v1/accounts/"+url.PathEscape("a/../b"), ""); code != 204 {
		t.Errorf("DELETE a/../b: %d %v", code, out)
	}
	// The query is not part of the name.
	for range 4 {
		f.apiReq("POST", "/v1/failures", body("ip", "192.0.2.3", "username", "carol"))
	}
	if code, out := f.apiReq("DELETE", "/v1/accounts/carol?x=1", ""); code != 204 {
		t.Errorf("DELETE carol?x=1: %d %v", code, out)
	}
}

func TestAttemptDryRun(t *testing.T) {
	f, _ := accountFixture(t, "203.0.113.0/24", io.Discard)
	f.api.DryRun = true
	out := f.attempt(t, "ip", "203.0.113.5", "username", "bob")
	if out["allow"] != true || out["reason"] != "dry-run-denylisted" {
		t.Errorf("dry-run attempt: %v", out)
	}
}

func TestAccountsOffAPI(t *testing.T) {
	f := newFixture(t, "", "")
	local := engine.NewLocal(f.core, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), f.metrics)
	acc, _, err := engine.NewAccounts(engine.AccountOptions{Policy: decide.AccountPolicy{}, Max: 10, Now: time.Now}, local)
	if err != nil {
		t.Fatal(err)
	}
	f.api.Accounts = acc
	for range 20 {
		if code, out := f.apiReq("POST", "/v1/failures", body("ip", fmt.Sprintf("192.0.2.%d", 1+len(f.core.Bans(f.now))), "username", "admin")); code != 200 || out["account"] != nil {
			t.Fatalf("failure with accounts off: %d %v", code, out)
		}
	}
	if code, out := f.apiReq("POST", "/v1/successes", body("ip", "192.0.2.1", "username", "admin")); code != 200 || out["device"] != nil {
		t.Errorf("success with accounts off: %d %v", code, out)
	}
	if out := f.attempt(t, "ip", "198.51.100.1", "username", "admin"); out["allow"] != true {
		t.Errorf("attempt with accounts off: %v", out)
	}
	if code, out := f.apiReq("GET", "/v1/accounts", ""); code != 200 || len(out["accounts"].([]any)) != 0 {
		t.Errorf("GET /v1/accounts with accounts off: %d %v", code, out)
	}
}

// BenchmarkAttempt is POST /v1/attempts in process (JSON in and out): a
// locked account without a token, with its valid token, and an address
// refused before the account is looked at.
func BenchmarkAttempt(b *testing.B) {
	f, acc := accountFixture(b, "203.0.113.0/24", io.Discard)
	f.now = time.Now()
	for i := range 100_000 {
		acc.FailAccount(context.Background(), fmt.Sprintf("user%07d", i), "", f.now)
	}
	for i := range 4 {
		f.apiReq("POST", "/v1/failures", body("ip", fmt.Sprintf("198.51.100.%d", i+1), "username", "admin"))
	}
	_, out := f.apiReq("POST", "/v1/successes", body("ip", "192.0.2.1", "username", "admin"))
	tok := out["device"].(string)
	for _, tc := range []struct{ name, body, want string }{
		{"locked-no-token", body("ip", "192.0.2.9", "username", "admin"), `"account-locked"`},
		{"locked-valid-token", body("ip", "192.0.2.9", "username", "Admin", "device", tok), `{"allow":true}`},
		{"open-account", body("ip", "192.0.2.9", "username", "user0001234"), `{"allow":true}`},
		{"denylisted-address", body("ip", "203.0.113.9", "username", "admin"), `"denylisted"`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var req fasthttp.Request
			req.Header.SetMethod("POST")
			req.SetRequestURI("/v1/attempts")
			req.SetBodyString(tc.body)
			var ctx fasthttp.RequestCtx
			b.ReportAllocs()
			for b.Loop() {
				ctx.Init(&req, tcp("127.0.0.1"), nil)
				f.api.Handle(&ctx)
			}
			if !bytes.Contains(ctx.Response.Body(), []byte(tc.want)) {
				b.Fatalf("answer %s, want %s", ctx.Response.Body(), tc.want)
			}
		})
	}
}
