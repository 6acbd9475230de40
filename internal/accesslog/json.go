package accesslog

import "unicode/utf8"

// maxDepth bounds the nesting of a record: Caddy's is three deep
// (request.headers.X-Forwarded-For).
const maxDepth = 8

// scanner reads one JSON text (RFC 8259) from d. It validates everything it
// passes over, keeps nothing it is not asked for, and decodes the strings it
// is asked for into buf. Its zero value, with d set, is ready.
type scanner struct {
	d     []byte
	i     int
	depth int
	buf   []byte // decoded strings; slices of it are handed out
}

func (s *scanner) ws() {
	for s.i < len(s.d) {
		switch s.d[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.d) {
		return 0
	}
	return s.d[s.i]
}

func (s *scanner) eat(c byte) bool {
	if s.peek() != c {
		return false
	}
	s.i++
	return true
}

// object reads an object, calling field for each member with its decoded
// name; field reads the value (or calls skip) and returns false to stop.
// Names are decoded into buf and valid only during the call.
func (s *scanner) object(field func(name []byte) bool) bool {
	if !s.eat('{') {
		return false
	}
	if s.depth++; s.depth > maxDepth {
		return false
	}
	defer func() { s.depth-- }()
	if s.eat('}') {
		return true
	}
	for {
		name, ok := s.str()
		if !ok || !s.eat(':') {
			return false
		}
		if !field(name) {
			return false
		}
		if s.eat('}') {
			return true
		}
		if !s.eat(',') {
			return false
		}
	}
}

// array reads an array, calling elem for each element.
func (s *scanner) array(elem func() bool) bool {
	if !s.eat('[') {
		return false
	}
	if s.depth++; s.depth > maxDepth {
		return false
	}
	defer func() { s.depth-- }()
	if s.eat(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if s.eat(']') {
			return true
		}
		if !s.eat(',') {
			return false
		}
	}
}

// skip reads any value and keeps nothing of it.
func (s *scanner) skip() bool {
	switch c := s.peek(); {
	case c == '{':
		return s.object(func([]byte) bool { return s.skip() })
	case c == '[':
		return s.array(s.skip)
	case c == '"':
		mark := len(s.buf)
		_, ok := s.str()
		s.buf = s.buf[:mark]
		return ok
	case c == '-' || c >= '0' && c <= '9':
		_, ok := s.number()
		return ok
	}
	return s.literal("true") || s.literal("false") || s.literal("null")
}

func (s *scanner) literal(w string) bool {
	if len(s.d)-s.i >= len(w) && string(s.d[s.i:s.i+len(w)]) == w {
		s.i += len(w)
		return true
	}
	return false
}

// number reads a JSON number and returns its text.
func (s *scanner) number() ([]byte, bool) {
	s.ws()
	start := s.i
	if s.i < len(s.d) && s.d[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.d) && s.d[s.i] == '0':
		s.i++
	case s.digits() == 0:
		return nil, false
	}
	if s.i < len(s.d) && s.d[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return nil, false
		}
	}
	if s.i < len(s.d) && (s.d[s.i] == 'e' || s.d[s.i] == 'E') {
		s.i++
		if s.i < len(s.d) && (s.d[s.i] == '+' || s.d[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return nil, false
		}
	}
	return s.d[start:s.i], true
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.d) && s.d[s.i] >= '0' && s.d[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

// str reads a string and returns it decoded, appended to buf. Invalid
// UTF-8 and lone surrogates become U+FFFD, as encoding/json does.
func (s *scanner) str() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := len(s.buf)
	for s.i < len(s.d) {
		c := s.d[s.i]
		switch {
		case c == '"':
			s.i++
			return s.buf[start:], true
		case c < 0x20:
			return nil, false
		case c == '\\':
			if !s.escape() {
				return nil, false
			}
		case c < utf8.RuneSelf:
			s.buf = append(s.buf, c)
			s.i++
		default:
			r, n := utf8.DecodeRune(s.d[s.i:])
			if r == utf8.RuneError && n == 1 {
				s.buf = utf8.AppendRune(s.buf, utf8.RuneError)
			} else {
				s.buf = append(s.buf, s.d[s.i:s.i+n]...)
			}
			s.i += n
		}
	}
	return nil, false
}

// escape decodes one backslash escape at s.i.
func (s *scanner) escape() bool {
	if s.i+1 >= len(s.d) {
		return false
	}
	c := s.d[s.i+1]
	s.i += 2
	switch c {
	case '"', '\\', '/':
		s.buf = append(s.buf, c)
	case 'b':
		s.buf = append(s.buf, '\b')
	case 'f':
		s.buf = append(s.buf, '\f')
	case 'n':
		s.buf = append(s.buf, '\n')
	case 'r':
		s.buf = append(s.buf, '\r')
	case 't':
		s.buf = append(s.buf, '\t')
	case 'u':
		r, ok := s.hex4()
		if !ok {
			return false
		}
		if r >= 0xD800 && r < 0xDC00 && s.i+1 < len(s.d) && s.d[s.i] == '\\' && s.d[s.i+1] == 'u' {
			save := s.i
			s.i += 2
			lo, ok := s.hex4()
			if ok && lo >= 0xDC00 && lo < 0xE000 {
				r = (r-0xD800)<<10 | (lo - 0xDC00) + 0x10000
			} else {
				s.i = save // a lone high surrogate; the next escape stands alone
			}
		}
		if r >= 0xD800 && r < 0xE000 {
			r = utf8.RuneError
		}
		s.buf = utf8.AppendRune(s.buf, r)
	default:
		return false
	}
	return true
}

func (s *scanner) hex4() (rune, bool) {
	if len(s.d)-s.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s.d[s.i : s.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	s.i += 4
	return r, true
}
