package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func lookupFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	c, err := Load(lookupFrom(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.DecideAddr != "127.0.0.1:9180" || c.APIAddr != "127.0.0.1:9181" || c.MaxFailures != 5 ||
		c.FindTime != 10*time.Minute || c.BanTime != time.Hour || c.MaxBanTime != 168*time.Hour ||
		c.IPv6Prefix != 64 || c.IPv4Prefix != 32 || c.MaxBans != 1000000 || c.StateFile != "doorman.db" ||
		c.ClientIPHeader != "X-Real-IP" || len(c.Trusted) != 2 {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestEmptyStateFileMeansMemory(t *testing.T) {
	c, err := Load(lookupFrom(map[string]string{"DOORMAN_STATE_FILE": ""}))
	if err != nil || c.StateFile != "" {
		t.Fatalf("StateFile = %q, %v; want empty", c.StateFile, err)
	}
}

func TestErrorsNameVariableAndValue(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"bad cidr", map[string]string{"DOORMAN_ALLOW": "10.0.0.0/8, 10.0.0.0/33"}, `DOORMAN_ALLOW: "10.0.0.0/33" is not an IP or CIDR`},
		{"bad deny", map[string]string{"DOORMAN_DENY": "nope"}, `DOORMAN_DENY: "nope" is not an IP or CIDR`},
		{"bad trusted", map[string]string{"DOORMAN_TRUSTED_PROXIES": "127.0.0.1/99"}, `DOORMAN_TRUSTED_PROXIES: "127.0.0.1/99" is not an IP or CIDR`},
		{"bad duration", map[string]string{"DOORMAN_FIND_TIME": "ten"}, `DOORMAN_FIND_TIME: "ten" is not a valid duration`},
		{"bad int", map[string]string{"DOORMAN_MAX_FAILURES": "5x"}, `DOORMAN_MAX_FAILURES: "5x" is not a valid integer`},
		{"bad bool", map[string]string{"DOORMAN_DRY_RUN": "maybe"}, `DOORMAN_DRY_RUN: "maybe" is not a valid boolean`},
		{"zero failures", map[string]string{"DOORMAN_MAX_FAILURES": "0"}, `DOORMAN_MAX_FAILURES: "0" must be from 1 to 1000`},
		{"v6 prefix", map[string]string{"DOORMAN_IPV6_PREFIX": "129"}, `DOORMAN_IPV6_PREFIX: "129" must be from 16 to 128`},
		{"max ban below ban", map[string]string{"DOORMAN_BAN_TIME": "2h", "DOORMAN_MAX_BAN_TIME": "1h"}, `DOORMAN_MAX_BAN_TIME: "1h0m0s" must be at least DOORMAN_BAN_TIME`},
		{"public api without token", map[string]string{"DOORMAN_API_ADDR": "0.0.0.0:9181"}, `DOORMAN_API_ADDR: "0.0.0.0:9181" is neither loopback nor a unix socket`},
		{"bad addr", map[string]string{"DOORMAN_DECIDE_ADDR": "9180"}, `DOORMAN_DECIDE_ADDR: "9180" is not host:port or unix:/path`},
		{"log format", map[string]string{"DOORMAN_LOG_FORMAT": "xml"}, `DOORMAN_LOG_FORMAT: "xml" must be text or json`},
		{"header", map[string]string{"DOORMAN_CLIENT_IP_HEADER": "X Real"}, `DOORMAN_CLIENT_IP_HEADER: "X Real" is not a header name`},
		{"redis url", map[string]string{"DOORMAN_REDIS_URL": "http://x"}, `DOORMAN_REDIS_URL: "(hidden: it may hold a password)" must start with`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(lookupFrom(tc.env))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant prefix %s", err, tc.want)
			}
		})
	}
}

func TestPublicAPIWithToken(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9181", "[::]:9181", "10.0.0.1:9181"} {
		if _, err := Load(lookupFrom(map[string]string{"DOORMAN_API_ADDR": addr, "DOORMAN_API_TOKEN": "s3cret"})); err != nil {
			t.Errorf("%s with a token: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:1", "[::1]:1", "localhost:1", "unix:/run/doorman.sock"} {
		if _, err := Load(lookupFrom(map[string]string{"DOORMAN_API_ADDR": addr})); err != nil {
			t.Errorf("%s without a token: %v", addr, err)
		}
	}
}

func TestListFiles(t *testing.T) {
	dir := t.TempDir()
	allow := filepath.Join(dir, "allow.txt")
	os.WriteFile(allow, []byte("# office\n192.0.2.0/24\n"), 0o644)
	c, err := Load(lookupFrom(map[string]string{"DOORMAN_ALLOW": "10.0.0.0/8", "DOORMAN_ALLOW_FILE": allow}))
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Lists()
	if err != nil {
		t.Fatal(err)
	}
	if a, _, _ := l.Sizes(); a != 2 {
		t.Fatalf("allow size = %d, want 2 (variable and file merged)", a)
	}
	os.WriteFile(allow, []byte("192.0.2.0/24\nbogus\n"), 0o644)
	if _, err := c.Lists(); err == nil || err.Error() != allow+`:2: "bogus" is not an IP or CIDR` {
		t.Fatalf("err = %v", err)
	}
}

func TestReferenceListsEveryVariable(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteReference(&buf, true); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"DOORMAN_DECIDE_ADDR", "DOORMAN_API_TOKEN", "DOORMAN_NEVER_BAN", "DOORMAN_DENY_FILE",
		"DOORMAN_BAN_FACTOR", "DOORMAN_MAX_TRACKED", "DOORMAN_DRY_RUN", "DOORMAN_STATE_FILE", "DOORMAN_REDIS_URL", "DOORMAN_LOG_LEVEL"} {
		if !strings.Contains(buf.String(), "`"+v+"`") {
			t.Errorf("reference lacks %s", v)
		}
	}
	if n := strings.Count(buf.String(), "\n| `DOORMAN_"); n != len(fields()) {
		t.Errorf("%d rows for %d fields", n, len(fields()))
	}
}

func TestRedisURLErrorHidesIt(t *testing.T) {
	_, err := Load(func(k string) (string, bool) {
		if k == "DOORMAN_REDIS_URL" {
			return "http://user:s3cret@host:6379", true
		}
		return "", false
	})
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "DOORMAN_REDIS_URL") {
		t.Fatalf("err = %v; want an error naming the variable, without the URL", err)
	}
}

// TestEveryVariableHasAGroup: a variable without a known group would be left
// out of `doorman env` and docs/config.md.
func TestEveryVariableHasAGroup(t *testing.T) {
	known := map[string]bool{}
	for _, g := range Groups {
		known[g] = true
	}
	n := 0
	for _, f := range fields() {
		if !known[f.Group] {
			t.Errorf("%s: group %q is not one of %v", f.Var, f.Group, Groups)
		}
	}
	for _, fs := range grouped() {
		n += len(fs)
	}
	if got, want := n, len(fields()); got != want {
		t.Errorf("grouped tables hold %d variables, want %d", got, want)
	}
}
