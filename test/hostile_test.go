package test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/testproc"
)

// hostileStrings would forge a line, a link, a cursor move or a reordering
// wherever they are shown raw.
var hostileStrings = []struct{ name, s string }{
	{"newline", "bob\ndoorman on front-1: unlock admin"},
	{"OSC 8 link", "\x1b]8;;http://evil\x07click\x1b]8;;\x07"},
	{"carriage return", "203.0.113.9/32\rALL CLEAR"},
	{"right-to-left override", "adm\u202enimda"},
	{"CSI and C1", "\x1b[2J\u009b31m\x7f"},
}

// unsafeFor reports the first rune of out that a terminal or a reader would
// act on: a control character other than a line end, a DEL or C1 control,
// or a format character (bidi controls).
func unsafeFor(out string) (rune, bool) {
	for _, r := range out {
		if r != '\n' && (r < 0x20 || r >= 0x7f && r <= 0x9f || unicode.Is(unicode.Cf, r)) {
			return r, true
		}
	}
	return 0, false
}

// TestHostileStrings: through the real doorman, a username with a control
// or format character is refused by every endpoint that takes one, and a
// note holding one is shown escaped on every output: the CLI's bans (and
// events, which show no note), the status page, the log lines in both
// formats.
func TestHostileStrings(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			d := startDoorman(t, map[string]string{"DOORMAN_LOG_FORMAT": format})
			for _, h := range hostileStrings {
				for _, tc := range []struct{ method, path string }{
					{"POST", "/v1/attempts"}, {"POST", "/v1/failures"}, {"POST", "/v1/successes"},
					{"DELETE", "/v1/accounts/" + url.PathEscape(h.s)},
				} {
					var body any
					if tc.method == "POST" {
						body = map[string]string{"ip": "192.0.2.1", "username": h.s}
					}
					if code, out := d.API(t, tc.method, tc.path, body); code != 400 {
						t.Errorf("%s: %s %s: %d %s, want 400", h.name, tc.method, tc.path, code, out)
					}
				}
			}
			if code, out := d.API(t, "GET", "/v1/decide?ip=192.0.2.1", nil); code != 200 || !strings.Contains(string(out), `"failures":0`) {
				t.Errorf("a refused failure was counted: %d %s", code, out)
			}
			for i, h := range hostileStrings {
				ip := "198.51.100." + string(rune('1'+i))
				if code, out := d.API(t, "POST", "/v1/bans", map[string]string{"ip": ip, "duration": "1h", "reason": h.s}); code != 201 {
					t.Fatalf("%s: ban: %d %s", h.name, code, out)
				}
			}
			bin := doormanBinary(t)
			outputs := map[string]string{}
			for _, cmd := range []string{"bans", "events"} {
				code, out, err := testproc.RunDoorman([]string{bin, cmd}, t.TempDir(),
					map[string]string{"DOORMAN_API_ADDR": d.APIAddr, "DOORMAN_STATE_FILE": ""}, 10*time.Second)
				if err != nil || code != 0 {
					t.Fatalf("doorman %s: exit %d, %v: %s", cmd, code, err, out)
				}
				outputs["doorman "+cmd] = out
			}
			resp, err := http.Get("http://" + d.APIAddr + "/ui/")
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("GET /ui/: %d", resp.StatusCode)
			}
			outputs["status page"] = string(page)
			d.Stop(t)
			outputs["log"] = d.Log(t)
			for name, out := range outputs {
				if r, bad := unsafeFor(out); bad {
					i := strings.IndexRune(out, r)
					t.Errorf("%s holds %U: %q", name, r, out[max(0, i-60):min(len(out), i+60)])
				}
				if name == "doorman bans" || name == "doorman events" {
					if n, want := strings.Count(out, "\n"), 1+len(hostileStrings); n != want {
						t.Errorf("%s: %d lines, want %d:\n%s", name, n, want, out)
					}
					for _, h := range hostileStrings {
						if name == "doorman bans" && !strings.Contains(out, api.Visible(h.s)) {
							t.Errorf("%s: no %s for %s", name, api.Visible(h.s), h.name)
						}
					}
				}
			}
		})
	}
}
