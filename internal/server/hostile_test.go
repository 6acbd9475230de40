package server

import (
	"encoding/json"
	"io"
	"net/url"
	"strings"
	"testing"

	"github.com/doorman/doorman/internal/api"
)

// hostile are attacker-chosen strings: each would forge a line, move the
// cursor, open a link or reorder text where it is shown.
var hostile = []struct{ name, s string }{
	{"newline", "bob\ndoorman: unlock admin"},
	{"OSC 8 link", "\x1b]8;;http://evil\x07click\x1b]8;;\x07"},
	{"carriage return", "bob\radmin"},
	{"right-to-left override", "adm\u202enimda"},
	{"DEL", "adm\x7fin"},
	{"C1 CSI", "adm\u009b2Jin"},
	{"NUL", "admin\x00"},
	{"zero width space", "ad\u200bmin"},
}

// TestHostileUsernames: every endpoint that takes a username refuses one
// with a control or format character with 400, counts nothing, and does not
// echo it.
func TestHostileUsernames(t *testing.T) {
	f, _ := accountFixture(t, "", io.Discard)
	for _, h := range hostile {
		for _, tc := range []struct{ name, method, uri, body string }{
			{"attempt", "POST", "/v1/attempts", body("ip", "192.0.2.1", "username", h.s)},
			{"failure", "POST", "/v1/failures", body("ip", "192.0.2.1", "username", h.s)},
			{"success", "POST", "/v1/successes", body("ip", "192.0.2.1", "username", h.s)},
			{"unlock", "DELETE", "/v1/accounts/" + url.PathEscape(h.s), ""},
		} {
			t.Run(h.name+"/"+tc.name, func(t *testing.T) {
				code, raw := f.apiReqRaw(tc.method, tc.uri, tc.body)
				if code != 400 {
					t.Errorf("%s %s: %d %s, want 400", tc.method, tc.uri, code, raw)
				}
				var out struct{ Error string }
				if err := json.Unmarshal(raw, &out); err != nil || !strings.Contains(out.Error, "control or format character") {
					t.Errorf("answer %s (%v), want an error naming the control character", raw, err)
				}
				if strings.Contains(out.Error, h.s) {
					t.Errorf("the error echoes the username: %q", out.Error)
				}
			})
		}
	}
	if s := f.core.Stats(f.now); s.Tracked != 0 {
		t.Errorf("%d addresses tracked after refused requests", s.Tracked)
	}
	if s := f.api.Service.Memory().Accounts().Stats(f.now); s.Tracked != 0 {
		t.Errorf("%d accounts tracked after refused requests", s.Tracked)
	}
}

// TestHostileNoteJSON: a note is kept as given (it is the operator's), and
// every JSON answer that carries it escapes its control characters.
func TestHostileNoteJSON(t *testing.T) {
	f := newFixture(t, "", "")
	for i, h := range hostile {
		ip := "198.51.100." + string(rune('1'+i))
		code, raw := f.apiReqRaw("POST", "/v1/bans", body("ip", ip, "reason", h.s))
		if code != 201 {
			t.Fatalf("%s: ban: %d %s", h.name, code, raw)
		}
		var b api.BanJSON
		if err := json.Unmarshal(raw, &b); err != nil || b.Note != h.s {
			t.Errorf("%s: note %q (%v), want %q", h.name, b.Note, err, h.s)
		}
	}
	code, raw := f.apiReqRaw("GET", "/v1/bans", "")
	if code != 200 {
		t.Fatalf("GET /v1/bans: %d", code)
	}
	if i := strings.IndexFunc(string(raw), func(r rune) bool { return r < 0x20 && r != '\n' }); i >= 0 {
		t.Errorf("answer holds %q at %d: %q", raw[i], i, raw)
	}
}
