package accesslog

import (
	"errors"
	"fmt"
	"strings"
)

// Preset is how a login form answers.
type Preset uint8

const (
	// Django and WordPress answer a failed login POST with 200 (the form
	// again) and a successful one with 302 (or 303).
	Django Preset = iota + 1
	WordPress
	// Status answers a failed login POST with 401 or 403 and a successful
	// one with any 2xx or 3xx (Grafana's /login, JSON APIs).
	Status
)

var presetNames = map[string]Preset{"django": Django, "wordpress": WordPress, "status": Status}

// Outcome is what a record says about its client.
type Outcome uint8

const (
	Ignore Outcome = iota // no rule's login, or an answer that says nothing (a 403 CSRF refusal, a 404)
	Failure
	Success
)

// Rule is one login form: a path, on one host or any.
type Rule struct {
	Preset Preset
	Host   string // lower case, no port; "" is any host
	Path   string // absolute, clean
}

// Rules are the login forms doorman learns from (DOORMAN_LEARN_RULES),
// parsed once. A Rules is read-only after ParseRules and safe to share.
type Rules struct {
	rules []Rule
}

// ParseRules parses "PRESET [HOST]PATH; ...", e.g.
// "django /admin/login/; wordpress blog.example.com/wp-login.php".
// An unknown preset, a path that is not absolute and clean, and the same
// host and path given twice are errors; "" is no rules.
func ParseRules(s string) (*Rules, error) {
	rs := &Rules{}
	seen := map[[2]string]bool{}
	for item := range strings.SplitSeq(s, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		f := strings.Fields(item)
		if len(f) != 2 {
			return nil, fmt.Errorf("%q is not PRESET PATH (e.g. django /admin/login/)", item)
		}
		p, ok := presetNames[f[0]]
		if !ok {
			return nil, fmt.Errorf("%q: unknown preset %q (django, wordpress or status)", item, f[0])
		}
		host, path, err := splitHostPath(f[1])
		if err != nil {
			return nil, fmt.Errorf("%q: %v", item, err)
		}
		k := [2]string{host, path}
		if seen[k] {
			return nil, fmt.Errorf("%q: %s given twice", item, f[1])
		}
		seen[k] = true
		rs.rules = append(rs.rules, Rule{Preset: p, Host: host, Path: path})
	}
	return rs, nil
}

// splitHostPath splits "host/path" or "/path" and checks both.
func splitHostPath(s string) (host, path string, err error) {
	i := strings.IndexByte(s, '/')
	if i < 0 {
		return "", "", errors.New("the path is not absolute (it must start with /)")
	}
	host, path = strings.ToLower(s[:i]), s[i:]
	for _, c := range []byte(host) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return "", "", fmt.Errorf("%q is not a host name (a path must start with /)", host)
		}
	}
	// "admin/login/" is a relative path, not the host "admin": a host
	// must have a dot.
	if host != "" && (!strings.Contains(host, ".") || host[0] == '.' || host[len(host)-1] == '.') {
		return "", "", fmt.Errorf("the path is not absolute (it must start with /; a host, as in admin.example.com/login/, has a dot)")
	}
	var buf []byte
	clean, ok := CleanPath([]byte(path), buf)
	if !ok || string(clean) != path || strings.ContainsAny(path, "?#%") {
		return "", "", fmt.Errorf("path %q is not clean (no query, no %%-escapes, no //, . or ..)", path)
	}
	return host, path, nil
}

// Rules returns the rules, in the order given.
func (rs *Rules) Rules() []Rule { return rs.rules }

// Len is the number of rules.
func (rs *Rules) Len() int { return len(rs.rules) }

// Match says what r tells of its client. Only POST requests count. The
// request target is cleaned first (CleanPath: query dropped, %-escapes
// decoded, dot segments and repeated slashes resolved), so that no
// spelling of a rule's path that the app would still route to it escapes
// the rule; what the app answers then decides. The host is compared
// without case and without a port. The first rule that matches decides;
// it is returned (nil when none did). scratch is reused for the cleaned
// path and returned.
func (rs *Rules) Match(r *Record, scratch []byte) (Outcome, *Rule, []byte) {
	if string(r.Method) != "POST" || len(rs.rules) == 0 {
		return Ignore, nil, scratch
	}
	path, ok := CleanPath(r.URI, scratch[:0])
	if !ok {
		return Ignore, nil, path
	}
	host := hostOnly(r.Host)
	for i := range rs.rules {
		ru := &rs.rules[i]
		if string(path) != ru.Path || ru.Host != "" && !strings.EqualFold(string(host), ru.Host) {
			continue
		}
		return outcome(ru.Preset, r.Status), ru, path
	}
	return Ignore, nil, path
}

func outcome(p Preset, status int) Outcome {
	switch p {
	case Django, WordPress:
		switch status {
		case 200:
			return Failure
		case 302, 303:
			return Success
		}
	case Status:
		switch {
		case status == 401 || status == 403:
			return Failure
		case status >= 200 && status < 400:
			return Success
		}
	}
	return Ignore
}

// hostOnly drops a port and the brackets of an IPv6 literal.
func hostOnly(h []byte) []byte {
	if len(h) > 0 && h[0] == '[' {
		if i := indexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return h
	}
	if i := indexByte(h, ':'); i >= 0 {
		return h[:i]
	}
	return h
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// CleanPath appends to dst the path of the request target uri: an
// absolute-form target ("http://host/p") loses its scheme and host, the
// query and fragment are dropped, %-escapes decoded, repeated slashes
// merged and "." and ".." segments resolved (".." above the root stays at
// the root). ok is false when the target is not a path (no leading /) or an
// escape is invalid or decodes to a NUL.
func CleanPath(uri, dst []byte) ([]byte, bool) {
	if i := indexAny(uri, '?', '#'); i >= 0 {
		uri = uri[:i]
	}
	if len(uri) > 0 && uri[0] != '/' {
		if i := indexOf(uri, "://"); i > 0 {
			uri = uri[i+3:]
			j := indexByte(uri, '/')
			if j < 0 {
				return dst, false
			}
			uri = uri[j:]
		}
	}
	if len(uri) == 0 || uri[0] != '/' {
		return dst, false
	}
	base := len(dst)
	for i := 0; i < len(uri); i++ {
		c := uri[i]
		if c == '%' {
			if i+2 >= len(uri) || unhex(uri[i+1]) < 0 || unhex(uri[i+2]) < 0 {
				return dst, false
			}
			c = byte(unhex(uri[i+1])<<4 | unhex(uri[i+2]))
			if c == 0 {
				return dst, false
			}
			i += 2
		}
		dst = append(dst, c)
	}
	return dotSegments(dst, base), true
}

// dotSegments resolves "//", "/./" and "/../" in the path dst[base:] in
// place; a trailing "/." or "/.." leaves a trailing slash.
func dotSegments(dst []byte, base int) []byte {
	p := dst[base:]
	out := p[:0]
	for i := 0; i < len(p); {
		// p[i] == '/': read one segment.
		j := i + 1
		for j < len(p) && p[j] != '/' {
			j++
		}
		seg := p[i+1 : j]
		last := j == len(p)
		switch string(seg) {
		case "":
			if last {
				out = append(out, '/')
			}
		case ".":
			if last {
				out = append(out, '/')
			}
		case "..":
			k := len(out) - 1
			for k >= 0 && out[k] != '/' {
				k--
			}
			if k < 0 {
				k = 0
			}
			out = out[:k]
			if last {
				out = append(out, '/')
			}
		default:
			out = append(out, '/')
			out = append(out, seg...)
		}
		i = j
	}
	if len(out) == 0 {
		out = append(out, '/')
	}
	return dst[:base+len(out)]
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

func indexAny(b []byte, c1, c2 byte) int {
	for i, x := range b {
		if x == c1 || x == c2 {
			return i
		}
	}
	return -1
}

func indexOf(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}
