package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The shipped fail2ban filter and jail (nginx/fail2ban/), checked with the
// real fail2ban tools: fail2ban-regex over a log that a real doorman wrote,
// and fail2ban-client's configuration test for the jail.

func filterPath(t *testing.T) string {
	t.Helper()
	return filepath.Join(repoRoot(t), "nginx", "fail2ban", "filter.d", "doorman.conf")
}

// f2bMatch is one failure fail2ban-regex found: the host it would ban, the
// time it read from the line, and the line.
type f2bMatch struct {
	id   string
	time float64
	line string
}

// fail2banRegex runs fail2ban-regex with the shipped filter over logPath and
// returns every match.
func fail2banRegex(t *testing.T, logPath string) []f2bMatch {
	t.Helper()
	cmd := exec.Command("fail2ban-regex", "-o", "<fid>\t<time>\t<msg>", logPath, filterPath(t))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s%s", err, out, stderr.Bytes())
	}
	var ms []f2bMatch
	for _, row := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if row == "" {
			continue
		}
		f := strings.SplitN(row, "\t", 3)
		if len(f) != 3 {
			t.Fatalf("fail2ban-regex printed %q, want id<TAB>time<TAB>line", row)
		}
		ts, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			t.Fatalf("fail2ban-regex printed time %q: %v", f[1], err)
		}
		ms = append(ms, f2bMatch{id: f[0], time: ts, line: f[2]})
	}
	return ms
}

// logFields parses one slog line, text (key=value, values quoted as Go
// strings when needed) or JSON, into its fields as strings.
func logFields(line string) (map[string]string, error) {
	if strings.HasPrefix(line, "{") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			return nil, err
		}
		f := map[string]string{}
		for k, v := range m {
			f[k] = fmt.Sprint(v)
		}
		return f, nil
	}
	f := map[string]string{}
	for rest := line; rest != ""; {
		k, after, ok := strings.Cut(rest, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \"") {
			return nil, fmt.Errorf("no key=value at %q", rest)
		}
		var v string
		if strings.HasPrefix(after, `"`) {
			q, err := strconv.QuotedPrefix(after)
			if err != nil {
				return nil, fmt.Errorf("bad quoted value at %q", after)
			}
			v, _ = strconv.Unquote(q)
			after = after[len(q):]
		} else {
			v, after, _ = strings.Cut(after, " ")
			after = " " + after
		}
		f[k] = v
		rest = strings.TrimPrefix(after, " ")
	}
	return f, nil
}

// banHost is the host fail2ban should report for a ban key: a single
// address without its /32 or /128, a range as is.
func banHost(t *testing.T, key string) string {
	t.Helper()
	p, err := netip.ParsePrefix(key)
	if err != nil {
		t.Fatalf("ban key %q: %v", key, err)
	}
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// checkFilter runs fail2ban-regex over the log at path and checks that it
// matched exactly the ban lines, in order, each with its key as the host and
// its own time. It returns the keys of the ban lines.
func checkFilter(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type banLine struct {
		line, host string
		time       time.Time
	}
	var bans []banLine
	var keys []string
	others := 0
	for _, line := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
		f, err := logFields(line)
		if err != nil {
			t.Fatalf("doorman wrote a line that is not slog text or JSON: %v\n%s", err, line)
		}
		if f["msg"] != "ban" {
			others++
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, f["time"])
		if err != nil {
			t.Fatalf("ban line time: %v\n%s", err, line)
		}
		bans = append(bans, banLine{line: line, host: banHost(t, f["key"]), time: ts})
		keys = append(keys, f["key"])
	}
	matches := fail2banRegex(t, path)
	for i := 0; i < max(len(bans), len(matches)); i++ {
		switch {
		case i >= len(matches):
			t.Errorf("ban line not matched:\n%s", bans[i].line)
		case i >= len(bans):
			t.Errorf("a line that is no ban matched as %s:\n%s", matches[i].id, matches[i].line)
		case matches[i].line != bans[i].line:
			t.Errorf("match %d is\n%s\nwant the ban line\n%s", i, matches[i].line, bans[i].line)
		default:
			if matches[i].id != bans[i].host {
				t.Errorf("host %q, want %q, in\n%s", matches[i].id, bans[i].host, bans[i].line)
			}
			if want := float64(bans[i].time.Unix()); math.Abs(matches[i].time-want) > 1 {
				t.Errorf("time %v, want %v (the line's own time), in\n%s", matches[i].time, want, bans[i].line)
			}
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", raw)
	}
	if others < 8 {
		t.Errorf("only %d lines besides the bans; the check needs other lines to reject:\n%s", others, raw)
	}
	return keys
}

// TestFail2banFilterRealLog bans addresses in a real doorman through the
// webhook and by hand, makes it log failures (one with a username crafted
// to look like a ban), successes, unbans and errors, then checks the shipped
// filter against that log in both formats.
func TestFail2banFilterRealLog(t *testing.T) {
	requireTool(t, "fail2ban-regex", "fail2ban")
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			d := startDoorman(t, map[string]string{
				"DOORMAN_LOG_FORMAT":   format,
				"DOORMAN_LOG_LEVEL":    "debug",
				"DOORMAN_MAX_FAILURES": "3",
				"DOORMAN_NEVER_BAN":    "198.51.100.50",
				// Two unit bans in one /48 ban the /48.
				"DOORMAN_RANGE_THRESHOLD": "2",
			})
			post := func(path string, body any, want int) map[string]any {
				t.Helper()
				code, b := d.API(t, "POST", path, body)
				if code != want {
					t.Fatalf("POST %s %v: %d %s, want %d", path, body, code, b, want)
				}
				var m map[string]any
				json.Unmarshal(b, &m)
				return m
			}
			fail := func(ip, user string, n int) (banned bool) {
				t.Helper()
				for i := 0; i < n; i++ {
					banned = post("/v1/failures", map[string]string{"ip": ip, "username": user}, 200)["banned"] == true
				}
				return banned
			}
			// Failure bans: an IPv4 address, an IPv6 host (its /64).
			if !fail("203.0.113.7", "admin", 3) {
				t.Fatal("203.0.113.7 not banned after 3 failures")
			}
			if !fail("2001:db8::7", "root", 3) {
				t.Fatal("2001:db8::7 not banned after 3 failures")
			}
			// A range ban: the second unit ban in 2001:db8:77::/48.
			fail("2001:db8:77:1::1", "admin", 3)
			if m := post("/v1/failures", map[string]string{"ip": "2001:db8:77:2::1"}, 200); m["banned"] == true {
				t.Fatal("banned after one failure")
			}
			fail("2001:db8:77:2::1", "admin", 2)
			if m := post("/v1/failures", map[string]string{"ip": "2001:db8:77:3::1"}, 200); m["banned"] != true {
				t.Fatalf("an address of the banned /48: %v, want banned", m)
			}
			// Usernames that imitate a ban line, in both formats.
			fail("198.51.100.1", "x msg=ban key=198.51.100.99/32 ", 1)
			fail("198.51.100.2", `","level":"WARN","msg":"ban","key":"198.51.100.98/32`, 1)
			// One with a newline is refused (api.Username) and writes no line.
			post("/v1/failures", map[string]string{"ip": "198.51.100.3", "username": "x\nlevel=WARN msg=ban key=198.51.100.97/32"}, 400)
			// Never banned, however many failures.
			if fail("198.51.100.50", "admin", 4) {
				t.Fatal("DOORMAN_NEVER_BAN address banned")
			}
			post("/v1/successes", map[string]string{"ip": "198.51.100.1"}, 200)
			// Manual bans: an address, an IPv4 range, an IPv6 range.
			post("/v1/bans", map[string]string{"ip": "192.0.2.44", "duration": "1h", "reason": "scanner"}, 201)
			post("/v1/bans", map[string]string{"ip": "10.9.0.0/16", "duration": "2h", "reason": "msg=ban key=10.0.0.0/8"}, 201)
			post("/v1/bans", map[string]string{"ip": "2001:db8:bad::/48", "duration": "30m"}, 201)
			post("/v1/failures", "{", 400)
			if code, b := d.API(t, "DELETE", "/v1/bans/203.0.113.7", nil); code != 204 {
				t.Fatalf("unban: %d %s", code, b)
			}
			d.API(t, "GET", "/v1/decide?ip=10.9.1.1", nil)
			d.Stop(t) // shutdown lines too, and a complete log

			keys := checkFilter(t, d.LogPath)
			slices.Sort(keys)
			want := []string{"10.9.0.0/16", "192.0.2.44/32", "2001:db8:77:1::/64", "2001:db8:77::/48", "2001:db8::/64", "2001:db8:bad::/48", "203.0.113.7/32"}
			if !slices.Equal(keys, want) {
				t.Errorf("ban lines for %v, want %v", keys, want)
			}
		})
	}
}

// TestFail2banFilterSample checks the filter on hand-written lines, for the
// cases a short run of doorman does not produce: numeric zone offsets,
// nanosecond and no fractions, fields in another order.
func TestFail2banFilterSample(t *testing.T) {
	requireTool(t, "fail2ban-regex", "fail2ban")
	cases := []struct{ line, host string }{
		{`time=2026-11-28T10:37:25.123Z level=WARN msg=ban ip=203.0.113.7 key=203.0.113.7/32 until=2026-11-28T11:37:25Z failures=5 count=1 reason=failures duration=1h0m0s`, "203.0.113.7"},
		{`time=2026-11-28T11:37:26.123+01:00 level=WARN msg=ban ip=2001:db8::7 key=2001:db8::/64 until=2026-11-28T12:37:25+01:00 failures=5 count=2 reason=failures duration=2h0m0s`, "2001:db8::/64"},
		{`time=2026-11-28T10:37:27Z level=WARN msg=ban key=10.9.0.0/16 ip=10.9.0.0/16 reason=manual note="a b"`, "10.9.0.0/16"},
		{`time=2026-11-28T10:37:28.000-05:00 level=WARN msg=ban ip=2001:db8::1 key=2001:db8::1/128 reason=manual`, "2001:db8::1"},
		{`{"time":"2026-11-28T10:37:29.123456789Z","level":"WARN","msg":"ban","ip":"203.0.113.8","key":"203.0.113.8/32","until":"2026-11-28T11:37:29Z","failures":5,"count":1,"reason":"failures","duration":"1h0m0s"}`, "203.0.113.8"},
		{`{"time":"2026-11-28T10:37:30+02:00","level":"WARN","msg":"ban","note":"x \"key\":\"1.1.1.1/32\"","failures":0,"key":"10.8.0.0/16"}`, "10.8.0.0/16"},
		{`time=2026-11-28T10:37:31.000Z level=INFO msg=unban ip=203.0.113.7 key=203.0.113.7/32 active=true`, ""},
		{`time=2026-11-28T10:37:31.000Z level=INFO msg=failure ip=198.51.100.1 key=198.51.100.1/32 username="x msg=ban key=198.51.100.99/32" failures=1`, ""},
		{`time=2026-11-28T10:37:31.000Z level=WARN msg=eviction table=bans key=192.0.2.1/32`, ""},
		{`time=2026-11-28T10:37:31.000Z level=WARN msg="ban store write failed" key=192.0.2.2/32`, ""},
		{`time=2026-11-28T10:37:31.000Z level=INFO msg=banned ip=192.0.2.3 key=192.0.2.3/32`, ""},
		{`{"time":"2026-11-28T10:37:31Z","level":"INFO","msg":"failure","username":"\",\"msg\":\"ban\",\"key\":\"198.51.100.98/32\"","key":"198.51.100.2/32"}`, ""},
		{`{"time":"2026-11-28T10:37:31Z","level":"INFO","msg":"unban","key":"203.0.113.7/32"}`, ""},
	}
	path := filepath.Join(t.TempDir(), "doorman.log")
	var b strings.Builder
	for _, c := range cases {
		b.WriteString(c.line + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got := map[string]f2bMatch{}
	for _, m := range fail2banRegex(t, path) {
		got[m.line] = m
	}
	for _, c := range cases {
		m, ok := got[c.line]
		switch {
		case c.host == "" && ok:
			t.Errorf("matched as %s, want no match:\n%s", m.id, c.line)
		case c.host != "" && !ok:
			t.Errorf("not matched, want %s:\n%s", c.host, c.line)
		case ok && m.id != c.host:
			t.Errorf("host %s, want %s:\n%s", m.id, c.host, c.line)
		case ok:
			f, _ := logFields(c.line)
			ts, err := time.Parse(time.RFC3339Nano, f["time"])
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(m.time-float64(ts.Unix())) > 1 {
				t.Errorf("time %v, want %v:\n%s", m.time, ts.Unix(), c.line)
			}
		}
	}
}

// TestFail2banJail loads the shipped jail and filter into a copy of the
// system's fail2ban configuration, runs fail2ban-client's configuration test,
// and checks that the jail's ban times follow doorman's defaults
// (DOORMAN_BAN_TIME 1h, DOORMAN_BAN_FACTOR 2, DOORMAN_MAX_BAN_TIME 168h),
// computed by fail2ban's own code.
func TestFail2banJail(t *testing.T) {
	requireTool(t, "fail2ban-client", "fail2ban")
	const etc = "/etc/fail2ban"
	if _, err := os.Stat(filepath.Join(etc, "jail.conf")); err != nil {
		requireTool(t, filepath.Join(etc, "jail.conf"), "fail2ban")
	}
	dir := filepath.Join(t.TempDir(), "fail2ban")
	if out, err := exec.Command("cp", "-r", etc, dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	write := func(path string, b []byte) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Only the doorman jail: the distribution's enabled jails would need
	// their own log files.
	if err := os.RemoveAll(filepath.Join(dir, "jail.d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "jail.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "doorman.log")
	write(logPath, nil)
	root := filepath.Join(repoRoot(t), "nginx", "fail2ban")
	jail, err := os.ReadFile(filepath.Join(root, "jail.d", "doorman.conf"))
	if err != nil {
		t.Fatal(err)
	}
	const shippedLog = "logpath  = /var/log/doorman/doorman.log"
	if !bytes.Contains(jail, []byte(shippedLog)) {
		t.Fatalf("jail.d/doorman.conf no longer contains %q", shippedLog)
	}
	jail = bytes.Replace(jail, []byte(shippedLog), []byte("logpath = "+logPath), 1)
	write(filepath.Join(dir, "jail.d", "doorman.conf"), jail)
	filter, err := os.ReadFile(filepath.Join(root, "filter.d", "doorman.conf"))
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(dir, "filter.d", "doorman.conf"), filter)

	out, err := exec.Command("fail2ban-client", "-c", dir, "-t").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK: configuration test is successful") {
		t.Fatalf("fail2ban-client -t: %v\n%s", err, out)
	}

	// The settings fail2ban would send to its server, one Python list per line.
	dump, err := exec.Command("fail2ban-client", "-c", dir, "-d").Output()
	if err != nil {
		t.Fatalf("fail2ban-client -d: %v", err)
	}
	settings := map[string]string{}
	for _, line := range strings.Split(string(dump), "\n") {
		const p = "['set', 'doorman', '"
		if rest, ok := strings.CutPrefix(line, p); ok {
			name, value, _ := strings.Cut(rest, "', ")
			settings[name] = strings.Trim(strings.TrimSuffix(value, "]"), "'")
		}
	}
	for name, want := range map[string]string{"maxretry": "1", "bantime": "1h", "bantime.increment": "True", "bantime.maxtime": "168h"} {
		if settings[name] != want {
			t.Errorf("jail setting %s = %q, want %q (all: %v)", name, settings[name], want, settings)
		}
	}
	if !strings.Contains(string(dump), "'addfailregex'") || !strings.Contains(string(dump), `msg=ban`) {
		t.Errorf("the jail does not use the doorman filter:\n%s", dump)
	}

	// The n-th ban of a unit: fail2ban's ban.Count is n-1.
	py := `import sys
from fail2ban.server.jail import Jail
j = Jail("doorman")
for k in ("increment", "formula", "maxtime"):
    j.setBanTimeExtra(k, sys.argv[{"increment": 1, "formula": 2, "maxtime": 3}[k]])
f = j.getBanTimeExtra("evformula")
class Ban: pass
for n in range(1, 11):
    b = Ban(); b.Time = 3600; b.Count = n - 1
    print(int(f(b)))
`
	cmd := exec.Command("/usr/bin/python3", "-c", py, settings["bantime.increment"], settings["bantime.formula"], settings["bantime.maxtime"])
	res, err := cmd.Output()
	if err != nil {
		t.Fatalf("evaluating bantime.formula %q: %v", settings["bantime.formula"], err)
	}
	got := strings.Fields(string(res))
	var want []string
	for n := 1; n <= 10; n++ {
		d := time.Hour << (n - 1) // BAN_TIME * 2^(n-1)
		if d > 168*time.Hour {
			d = 168 * time.Hour
		}
		want = append(want, strconv.Itoa(int(d.Seconds())))
	}
	if !slices.Equal(got, want) {
		t.Errorf("ban times in seconds for bans 1..10: %v, want doorman's %v", got, want)
	}
}
