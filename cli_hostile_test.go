package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"

	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/config"
)

// hostile are strings an attacker (a username, a note, a Redis writer) or a
// compromised server may hand the CLI.
var hostile = []struct{ name, s string }{
	{"newline forging a line", "bob\nadmin  2026-01-01T00:00:00Z  0  0"},
	{"OSC 8 link", "\x1b]8;;http://evil\x07click here\x1b]8;;\x07"},
	{"carriage return", "203.0.113.7/32\rALL CLEAR"},
	{"right-to-left override", "adm\u202enimda"},
	{"CSI clear screen", "\x1b[2J\x1b[H"},
	{"DEL and C1 CSI", "a\x7f\u009b31mred"},
	{"tab breaking columns", "a\tb\tc"},
}

// terminalSafe reports the first rune of out a terminal would act on: any
// control character but the line ends the CLI writes itself, and format
// characters (bidi controls).
func terminalSafe(out string) (rune, bool) {
	for _, r := range out {
		if r != '\n' && (r < 0x20 || r >= 0x7f && r <= 0x9f || unicode.Is(unicode.Cf, r)) {
			return r, false
		}
	}
	return 0, true
}

// TestCLIHostileOutput runs every command that prints what the server
// answers against a server answering a hostile string in every field.
func TestCLIHostileOutput(t *testing.T) {
	for _, h := range hostile {
		t.Run(h.name, func(t *testing.T) {
			s := h.s
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				var v any
				switch {
				case r.Method == "GET" && r.URL.Path == "/v1/bans":
					v = map[string]any{"bans": []map[string]any{{"key": s, "until": s, "reason": s, "count": 1, "note": s}}}
				case r.Method == "GET" && r.URL.Path == "/v1/events":
					v = map[string]any{"events": []map[string]any{{"time": s, "type": s, "key": s, "reason": s, "source": s, "until": s, "count": 1}}}
				case r.Method == "GET" && r.URL.Path == "/v1/accounts":
					v = map[string]any{"accounts": []map[string]any{{"username": s, "failures": 1, "locked": true, "until": s, "count": 1}}}
				case r.Method == "GET" && r.URL.Path == "/v1/decide":
					v = map[string]any{"ip": s, "verdict": s, "reason": s, "key": s, "until": s, "failures": 1}
				case r.Method == "POST" && r.URL.Path == "/v1/bans":
					w.WriteHeader(http.StatusCreated)
					v = map[string]any{"key": s, "until": s, "reason": s, "count": 1}
				case r.Method == "DELETE":
					w.WriteHeader(http.StatusNoContent)
					return
				default:
					w.WriteHeader(http.StatusNotFound)
					v = map[string]string{"error": "no such thing: " + s}
				}
				json.NewEncoder(w).Encode(v)
			}))
			defer srv.Close()
			cfg := &config.Config{APIListen: config.Listen{Network: "tcp", Address: strings.TrimPrefix(srv.URL, "http://")}}
			for _, tc := range []struct {
				name  string
				cmd   string
				args  []string
				lines int // what the command prints, in lines; -1: an error; -2: either
			}{
				{"bans", "bans", nil, 2},
				{"events", "events", nil, 2},
				{"accounts", "accounts", nil, 2},
				{"check", "check", []string{"192.0.2.1"}, 1},
				{"ban", "ban", []string{"192.0.2.1"}, 1},
				{"unban with a hostile argument", "unban", []string{s}, -2},
				{"unlock with a hostile argument", "unlock", []string{s}, -2},
				{"an error message", "health", nil, -1},
			} {
				var out bytes.Buffer
				err := client(context.Background(), cfg, tc.cmd, tc.args, &out)
				got := out.String()
				if tc.lines == -2 {
					tc.lines = 1
					if err != nil {
						tc.lines = -1
					}
				}
				refused := tc.lines == -1
				if refused {
					if err == nil {
						t.Fatalf("%s: no error", tc.name)
					}
					got, tc.lines = err.Error(), 0
				} else if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if r, ok := terminalSafe(got); !ok {
					t.Errorf("%s: output holds %U: %q", tc.name, r, got)
				}
				if n := strings.Count(got, "\n"); n != tc.lines {
					t.Errorf("%s: %d lines, want %d: %q", tc.name, n, tc.lines, got)
				}
				if (!refused || strings.Contains(got, "no such thing")) && (!strings.Contains(got, `"`) || !strings.Contains(got, `\`)) {
					t.Errorf("%s: the hostile string is not shown escaped: %q", tc.name, got)
				}
			}
		})
	}
}

// TestLogLinesHostile: in either log format a hostile value stays on its
// line, with no control or format character, and reads back as the value's
// visible form.
func TestLogLinesHostile(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		for _, h := range hostile {
			t.Run(format+"/"+h.name, func(t *testing.T) {
				var b bytes.Buffer
				log := newLogger(&config.Config{LogFormat: format, LogLevel: "info"}, &b)
				log.Warn("ban", "key", "203.0.113.7/32", "note", h.s)
				log.Info("ui unlock", "user", h.s)
				log.Error("api", "err", errors.New("bad: "+h.s))
				got := b.String()
				if r, ok := terminalSafe(got); !ok {
					t.Errorf("log holds %U: %q", r, got)
				}
				if n := strings.Count(got, "\n"); n != 3 {
					t.Errorf("%d lines, want 3: %q", n, got)
				}
				if format == "json" {
					for line := range strings.SplitSeq(strings.TrimSpace(got), "\n") {
						var m map[string]any
						if err := json.Unmarshal([]byte(line), &m); err != nil {
							t.Fatalf("not JSON: %q: %v", line, err)
						}
						v, _ := m["note"].(string)
						if u, _ := m["user"].(string); u != "" {
							v = u
						}
						want := api.Visible(h.s)
						if e, _ := m["err"].(string); e != "" {
							v, want = e, api.Visible("bad: "+h.s)
						}
						if v != want {
							t.Errorf("logged %q, want %q", v, want)
						}
					}
				}
			})
		}
	}
}
