package notify

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

// Usernames and notes are chosen by whoever fails a login or makes a ban;
// in neither format can they add a line, a link, a mention or terminal
// control to what the operator reads.
func TestHostileValues(t *testing.T) {
	for _, tc := range []struct {
		name  string
		e     Event
		slack string // the whole text
	}{
		{"newline forges a line with a link",
			Event{Type: "lock", Key: "bob\ndoorman on front-1: unlock admin <https://evil.example|click>", Source: "failures"},
			"doorman on front-1: lock `bob\\ndoorman on front-1: unlock admin &lt;https://evil.example|click&gt;` (by failures)"},
		{"ANSI escape",
			Event{Type: "lock", Key: "\x1b[2J\x1b[Hadmin"},
			"doorman on front-1: lock `\\x1b[2J\\x1b[Hadmin`"},
		{"backticks end the code span",
			Event{Type: "unlock", Key: "a` <!channel> *now* `b"},
			"doorman on front-1: unlock `a\\x60 &lt;!channel&gt; *now* \\x60b`"},
		{"mention and link in a note",
			Event{Type: "ban", Key: "203.0.113.7/32", Reason: "<!channel> unlock admin\r\n<https://evil.example|here>", Source: "manual"},
			"doorman on front-1: ban `203.0.113.7/32` (reason `&lt;!channel&gt; unlock admin\\r\\n&lt;https://evil.example|here&gt;`, by manual)"},
		{"pre-escaped entities",
			Event{Type: "ban", Key: "203.0.113.7/32", Reason: "&lt;!here&gt;"},
			"doorman on front-1: ban `203.0.113.7/32` (reason `&amp;lt;!here&amp;gt;`)"},
		{"a typed backslash-n is not a line break",
			Event{Type: "lock", Key: `admin\nroot`},
			"doorman on front-1: lock `admin\\\\nroot`"},
		{"bidi override and zero width",
			Event{Type: "lock", Key: "adm\u202enimda\u200b"},
			"doorman on front-1: lock `adm\\u202enimda\\u200b`"},
		{"invalid UTF-8 and DEL",
			Event{Type: "lock", Key: "\xff\x7f"},
			"doorman on front-1: lock `\\xff\\x7f`"},
	} {
		for _, format := range []string{FormatSlack, FormatJSON} {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				rec := &receiver{}
				srv := httptest.NewServer(rec)
				defer srv.Close()
				_, st, _, _ := newTest(t, srv.URL, Options{Format: format}, tc.e)
				st.next(t)
				bodies := rec.got()
				if len(bodies) != 1 {
					t.Fatalf("requests: got %d, want 1", len(bodies))
				}
				body := bodies[0]
				if format == FormatJSON {
					// encoding/json escapes control characters (DEL is
					// legal JSON) and <, >, &; the receiver gets each value
					// as it was, in its own field.
					if i := strings.IndexFunc(body, func(r rune) bool { return r < 0x20 || strings.ContainsRune("<>&", r) }); i >= 0 {
						t.Errorf("body has %q at %d: %s", body[i], i, body)
					}
					b := decode(t, body)
					if len(b.Events) != 1 {
						t.Fatalf("events: got %d, want 1", len(b.Events))
					}
					// Invalid UTF-8 becomes U+FFFD; everything else arrives as it was.
					wantKey := strings.ToValidUTF8(tc.e.Key, "\uFFFD")
					if got := b.Events[0]["key"]; got != wantKey {
						t.Errorf("key: got %q, want %q", got, wantKey)
					}
					if got := b.Events[0]["reason"]; got != tc.e.Reason {
						t.Errorf("reason: got %q, want %q", got, tc.e.Reason)
					}
					return
				}
				var msg map[string]string
				if err := json.Unmarshal([]byte(body), &msg); err != nil {
					t.Fatal(err)
				}
				text := msg["text"]
				if text != tc.slack {
					t.Errorf("text:\n got %q\nwant %q", text, tc.slack)
				}
				if i := strings.IndexFunc(text, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '<' || r == '>' }); i >= 0 {
					t.Errorf("text has %q at %d: %q", text[i], i, text)
				}
				spans := 1 // the key
				if tc.e.Reason != "" {
					spans++
				}
				if got := strings.Count(text, "`"); got != 2*spans {
					t.Errorf("backticks: got %d, want %d (one code span for each value)", got, 2*spans)
				}
			})
		}
	}
}
