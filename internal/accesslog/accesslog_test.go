package accesslog

import (
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/gaissmai/bart"
)

func TestMessage(t *testing.T) {
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"nginx nohostname", `<190>Dec  3 09:04:39 nginx: {"a":1}`, `{"a":1}`, true},
		{"nginx with host", `<190>Dec 13 09:04:39 web1 nginx: {"a":1}`, `{"a":1}`, true},
		{"haproxy pid", `<134>Dec  3 09:04:39 haproxy[1234]: {"a":1}`, `{"a":1}`, true},
		{"rfc5424 nil sd", `<134>1 2026-12-03T09:04:39.123Z host haproxy 1234 - - {"a":1}`, `{"a":1}`, true},
		{"rfc5424 sd and bom", "<134>1 2026-12-03T09:04:39Z h app - - [x@1 a=\"]\\\"\"][y] \xEF\xBB\xBF{\"a\":1}", `{"a":1}`, true},
		{"rfc5424 no message", `<134>1 2026-12-03T09:04:39Z h app - - -`, ``, true},
		{"bare with newline", "{\"a\":1}\n", `{"a":1}`, true},
		{"message keeps its colons", `<190>Dec  3 09:04:39 nginx: {"a":": "}`, `{"a":": "}`, true},
		{"empty", "", "", false},
		{"newline only", "\n", "", false},
		{"pri too big", `<192>Dec  3 09:04:39 nginx: x`, "", false},
		{"pri four digits", `<0190>Dec  3 09:04:39 nginx: x`, "", false},
		{"pri unclosed", `<19`, "", false},
		{"no pri digits", `<>Dec  3 09:04:39 nginx: x`, "", false},
		{"short 3164", `<190>Dec  3`, "", false},
		{"bad stamp", `<190>December 3 09:04 nginx: x`, "", false},
		{"no tag end", `<190>Dec  3 09:04:39 nginx x`, "", false},
		{"control char in header", "<190>Dec  3 09:04:39 ng\x00inx: x", "", false},
		{"5424 short", `<134>1 2026-12-03T09:04:39Z h`, "", false},
		{"5424 empty field", `<134>1 2026-12-03T09:04:39Z  app - - - x`, "", false},
		{"5424 sd unclosed", `<134>1 t h a p m [x a="]`, "", false},
		{"5424 no space after sd", `<134>1 t h a p m -x`, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Message([]byte(tc.in))
			if ok != tc.ok || string(got) != tc.want {
				t.Errorf("Message(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

const nginxRecord = `<190>Dec  3 09:04:39 nginx: {"client":"192.0.2.7","method":"POST","host":"example.com","uri":"/admin/login/?next=/admin/","status":"200","request_id":"4f1c"}`

const caddyRecord = `{"level":"info","ts":1764752679.1,"logger":"http.log.access.log0","msg":"handled request",` +
	`"request":{"remote_ip":"%s","remote_port":"41234","proto":"HTTP/1.1","method":"POST","host":"example.com:443","uri":"/wp-login.php",` +
	`"headers":{"User-Agent":["x"]%s}},"user_id":"","duration":0.001,"size":12,"status":302,"resp_headers":{"Location":["/wp-admin/"]}}` + "\n"

func caddy(remote, xff string) string {
	if xff != "" {
		xff = `,"X-Forwarded-For":` + xff
	}
	return strings.Replace(strings.Replace(caddyRecord, "%s", remote, 1), "%s", xff, 1)
}

func TestParse(t *testing.T) {
	trusted := new(bart.Lite)
	trusted.Insert(netip.MustParsePrefix("127.0.0.0/8"))
	trusted.Insert(netip.MustParsePrefix("198.51.100.0/24"))
	tests := []struct {
		name   string
		in     string
		why    Why
		format Format
		client string
		status int
		uri    string
	}{
		{"nginx", nginxRecord, OK, Flat, "192.0.2.7", 200, "/admin/login/?next=/admin/"},
		{"nginx numeric status, escapes", `{"client":"2001:db8::1","method":"POST","uri":"/a\u0062\/c\"","status":302}`, OK, Flat, "2001:db8::1", 302, `/ab/c"`},
		{"mapped address cleaned", `{"client":"::ffff:192.0.2.9","method":"POST","uri":"/","status":"200"}`, OK, Flat, "192.0.2.9", 200, "/"},
		{"caddy peer", caddy("192.0.2.7", ""), OK, Caddy, "192.0.2.7", 302, "/wp-login.php"},
		{"caddy peer untrusted: its XFF ignored", caddy("192.0.2.7", `["203.0.113.5"]`), OK, Caddy, "192.0.2.7", 302, "/wp-login.php"},
		{"caddy trusted peer: XFF walked", caddy("198.51.100.2", `["203.0.113.5, 198.51.100.3"]`), OK, Caddy, "203.0.113.5", 302, "/wp-login.php"},
		{"caddy trusted peer, no XFF", caddy("127.0.0.1", ""), NoClient, Caddy, "", 302, "/wp-login.php"},
		{"caddy trusted peer, two XFF lines", caddy("127.0.0.1", `["203.0.113.5","203.0.113.6"]`), NoClient, Caddy, "", 302, "/wp-login.php"},
		{"caddy trusted peer, XFF garbage", caddy("127.0.0.1", `["unknown"]`), NoClient, Caddy, "", 302, "/wp-login.php"},
		{"client not an address", `{"client":"example.com","method":"POST","uri":"/","status":"200"}`, NoClient, Flat, "", 200, "/"},
		{"client with port", `{"client":"192.0.2.1:80","method":"POST","uri":"/","status":"200"}`, NoClient, Flat, "", 200, "/"},
		{"client twice", `{"client":"192.0.2.1","client":"192.0.2.2","method":"POST","uri":"/","status":"200"}`, Malformed, 0, "", 0, ""},
		{"status twice", `{"client":"192.0.2.1","method":"POST","uri":"/","status":"302","status":"200"}`, Malformed, 0, "", 0, ""},
		{"status not a code", `{"client":"192.0.2.1","method":"POST","uri":"/","status":"20x"}`, Malformed, 0, "", 0, ""},
		{"status 2.0e2", `{"client":"192.0.2.1","method":"POST","uri":"/","status":2.0e2}`, Malformed, 0, "", 0, ""},
		{"status missing", `{"client":"192.0.2.1","method":"POST","uri":"/"}`, Malformed, Flat, "", 0, "/"},
		{"client a number", `{"client":1,"method":"POST","uri":"/","status":"200"}`, Malformed, 0, "", 0, ""},
		{"truncated", nginxRecord[:len(nginxRecord)-10], Malformed, 0, "", 0, ""},
		{"trailing garbage", `{"client":"192.0.2.1","method":"POST","uri":"/","status":"200"} x`, Malformed, 0, "", 0, ""},
		{"two objects", `{"client":"192.0.2.1","method":"POST","uri":"/","status":"200"}{}`, Malformed, 0, "", 0, ""},
		{"raw control char", "{\"client\":\"192.0.2.1\",\"method\":\"POST\",\"uri\":\"/\x01\",\"status\":\"200\"}", Malformed, 0, "", 0, ""},
		{"not an object", `["client"]`, Malformed, 0, "", 0, ""},
		{"unknown JSON", `{"msg":"hello"}`, Unknown, 0, "", 0, ""},
		{"plain text", `<190>Dec  3 09:04:39 nginx: 192.0.2.1 - - "POST / HTTP/1.1" 200`, Malformed, 0, "", 0, ""},
		{"oversized", `{"x":"` + strings.Repeat("a", MaxRecord) + `"}`, Oversized, 0, "", 0, ""},
		{"deep", strings.Repeat(`{"a":`, 20) + "1" + strings.Repeat("}", 20), Malformed, 0, "", 0, ""},
	}
	p := &Parser{Trusted: trusted}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r Record
			why := p.Parse([]byte(tc.in), &r)
			if why != tc.why {
				t.Fatalf("why = %v, want %v", why, tc.why)
			}
			if why != OK {
				return
			}
			if r.Format != tc.format || r.Client.String() != tc.client || r.Status != tc.status || string(r.URI) != tc.uri {
				t.Errorf("got format %d client %v status %d uri %q; want %d %s %d %q", r.Format, r.Client, r.Status, r.URI, tc.format, tc.client, tc.status, tc.uri)
			}
		})
	}
}

func TestParseRules(t *testing.T) {
	good := []struct{ in, want string }{
		{"", ""},
		{"django /admin/login/", "1||/admin/login/"},
		{" django /admin/login/ ; wordpress Blog.Example.com/wp-login.php;status /login; ", "1||/admin/login/ 2|blog.example.com|/wp-login.php 3||/login"},
		{"django /a/; django h.example/a/", "1||/a/ 1|h.example|/a/"},
	}
	for _, tc := range good {
		rs, err := ParseRules(tc.in)
		if err != nil {
			t.Errorf("ParseRules(%q): %v", tc.in, err)
			continue
		}
		var got []string
		for _, r := range rs.Rules() {
			got = append(got, string(rune('0'+r.Preset))+"|"+r.Host+"|"+r.Path)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("ParseRules(%q) = %v, want %s", tc.in, got, tc.want)
		}
	}
	bad := []struct{ in, want string }{
		{"joomla /login", `unknown preset "joomla"`},
		{"django ad:min/login/", `not a host name`},
		{"django login", `not absolute`},
		{"django /admin/login/; status /admin/login/", `given twice`},
		{"django /admin/login/ extra", `not PRESET PATH`},
		{"django", `not PRESET PATH`},
		{"django /a/../b", `not clean`},
		{"django /a//b", `not clean`},
		{"django /a?x=1", `not clean`},
		{"django /%61", `not clean`},
		{"django ho_st.example/a", `not a host name`},
		{"django admin/login/", `not absolute`},
		{"django .example/login/", `not absolute`},
	}
	for _, tc := range bad {
		_, err := ParseRules(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRules(%q) = %v, want an error with %q", tc.in, err, tc.want)
		}
	}
}

func TestMatch(t *testing.T) {
	rs, err := ParseRules("django /admin/login/; wordpress blog.example.com/wp-login.php; status /login")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, host, uri string
		status                  int
		want                    Outcome
	}{
		{"django failure", "POST", "example.com", "/admin/login/?next=/admin/", 200, Failure},
		{"django success", "POST", "example.com", "/admin/login/", 302, Success},
		{"django 303", "POST", "example.com", "/admin/login/", 303, Success},
		{"django CSRF 403", "POST", "example.com", "/admin/login/", 403, Ignore},
		{"django GET", "GET", "example.com", "/admin/login/", 200, Ignore},
		{"lower-case post", "post", "example.com", "/admin/login/", 200, Ignore},
		{"escaped path", "POST", "example.com", "/%61dmin/login/", 200, Failure},
		{"escaped slash", "POST", "example.com", "/admin%2Flogin/", 200, Failure},
		{"dot segments", "POST", "example.com", "/x/../admin/./login/", 200, Failure},
		{"double slash", "POST", "example.com", "//admin//login/", 200, Failure},
		{"above root", "POST", "example.com", "/../../admin/login/", 200, Failure},
		{"absolute form", "POST", "example.com", "http://example.com/admin/login/", 200, Failure},
		{"other path", "POST", "example.com", "/admin/login/x", 200, Ignore},
		{"no trailing slash", "POST", "example.com", "/admin/login", 200, Ignore},
		{"bad escape", "POST", "example.com", "/admin/login/%zz", 200, Ignore},
		{"NUL escape", "POST", "example.com", "/admin/login/%00", 200, Ignore},
		{"wordpress host", "POST", "Blog.Example.com:8443", "/wp-login.php", 200, Failure},
		{"wordpress other host", "POST", "example.com", "/wp-login.php", 200, Ignore},
		{"status 401", "POST", "g", "/login", 401, Failure},
		{"status 403", "POST", "g", "/login", 403, Failure},
		{"status 200", "POST", "g", "/login", 200, Success},
		{"status 500", "POST", "g", "/login", 500, Ignore},
		{"status 429", "POST", "g", "/login", 429, Ignore},
	}
	var scratch []byte
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Record{Method: []byte(tc.method), Host: []byte(tc.host), URI: []byte(tc.uri), Status: tc.status}
			var got Outcome
			got, _, scratch = rs.Match(&r, scratch)
			if got != tc.want {
				t.Errorf("Match = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCleanPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "/"}, {"/a/b", "/a/b"}, {"/a/b/", "/a/b/"}, {"/a/./b", "/a/b"}, {"/a/../b", "/b"},
		{"/a/..", "/"}, {"/a/b/..", "/a/"}, {"/a/.", "/a/"}, {"/..", "/"}, {"//", "/"}, {"/a//", "/a/"},
		{"/%2e%2e/a", "/a"}, {"/a?b#c", "/a"}, {"http://h", ""}, {"*", ""}, {"", ""},
	}
	for _, tc := range tests {
		got, ok := CleanPath([]byte(tc.in), nil)
		if !ok {
			got = nil
		}
		if string(got) != tc.want {
			t.Errorf("CleanPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestScannerAgainstEncodingJSON compares the scanner's verdict and decoded
// strings with encoding/json on random mutations of real records.
func TestScannerAgainstEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	seeds := []string{nginxRecord[len(`<190>Dec  3 09:04:39 nginx: `):], caddy("192.0.2.7", `["203.0.113.5"]`),
		`{"a":[1,-2.5e+3,true,false,null,{"b":"\ud83d\ude00\u00e9\ud800x"}],"c":{}}`}
	alphabet := []byte(`{}[]":,\ u0123456789abcdefABCDEF-+.eEtrnl` + "\x00\x1f\x80\xff\xc3\xa9")
	for n := range 20000 {
		d := []byte(seeds[n%len(seeds)])
		for range 1 + rng.IntN(3) {
			i := rng.IntN(len(d))
			switch rng.IntN(3) {
			case 0:
				d[i] = alphabet[rng.IntN(len(alphabet))]
			case 1:
				d = append(d[:i], d[i+1:]...)
			case 2:
				d = append(d[:i], append([]byte{alphabet[rng.IntN(len(alphabet))]}, d[i:]...)...)
			}
			if len(d) == 0 {
				break
			}
		}
		s := scanner{d: d}
		ok := s.skip() && s.peek() == 0
		if want := json.Valid(d); ok != want {
			t.Fatalf("scanner says valid=%v, encoding/json %v, for %q", ok, want, d)
		}
	}
	for _, in := range []string{`"\ud83d\ude00"`, `"\ud800x"`, `"\udc00\ud800"`, "\"\xff\"", `"\u00e9\/\b\f\n\r\t"`} {
		s := scanner{d: []byte(in)}
		got, ok := s.str()
		var want string
		if err := json.Unmarshal([]byte(in), &want); err != nil || !ok || string(got) != want {
			t.Errorf("str(%s) = %q, %v; encoding/json %q, %v", in, got, ok, want, err)
		}
	}
}

func TestParseAllocs(t *testing.T) {
	rs, _ := ParseRules("django /admin/login/")
	p := &Parser{Trusted: new(bart.Lite)}
	d := []byte(nginxRecord)
	var r Record
	var scratch []byte
	p.Parse(d, &r)
	allocs := testing.AllocsPerRun(100, func() {
		p.Parse(d, &r)
		_, _, scratch = rs.Match(&r, scratch)
	})
	if allocs > 8 {
		t.Errorf("Parse and Match: %v allocs, want at most 8", allocs)
	}
}

func BenchmarkParseMatch(b *testing.B) {
	rs, _ := ParseRules("django /admin/login/; wordpress /wp-login.php; status /login")
	trusted := new(bart.Lite)
	trusted.Insert(netip.MustParsePrefix("127.0.0.0/8"))
	for _, bc := range []struct{ name, in string }{{"nginx", nginxRecord}, {"caddy", caddy("192.0.2.7", "")}} {
		b.Run(bc.name, func(b *testing.B) {
			p := &Parser{Trusted: trusted}
			d := []byte(bc.in)
			var r Record
			var scratch []byte
			b.ReportAllocs()
			b.SetBytes(int64(len(d)))
			for b.Loop() {
				if p.Parse(d, &r) != OK {
					b.Fatal("not parsed")
				}
				_, _, scratch = rs.Match(&r, scratch)
			}
		})
	}
}
