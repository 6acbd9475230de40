package accesslog

import (
	"bytes"
	"net/netip"
	"unsafe"

	"github.com/gaissmai/bart"

	"github.com/doorman/doorman/decide"
)

// MaxRecord is the largest datagram read: a longer one is dropped whole.
const MaxRecord = 8 << 10

// Format is the shape a record came in.
type Format uint8

const (
	// Flat is doorman's own record, one JSON object of strings: nginx's
	// log_format doorman_learn (escape=json) and HAProxy's log-format in
	// proxies/haproxy/ write it.
	Flat Format = iota + 1
	// Caddy is Caddy's JSON access log entry.
	Caddy
)

// Record is one access-log record, as far as learning reads it. Its byte
// slices point into the Parser that filled it and are valid until its next
// Parse.
type Record struct {
	Format    Format
	Client    netip.Addr // the address the proxy judged, cleaned
	Method    []byte
	Host      []byte // as sent, e.g. with a port; see Rules.Match
	URI       []byte // the request target as sent
	Status    int
	RequestID []byte
}

// Why a datagram gave no record.
type Why uint8

const (
	OK        Why = iota
	Malformed     // the framing or the JSON does not parse, or a field is missing, repeated or of the wrong type
	Unknown       // valid JSON of no known format
	NoClient      // the client address does not parse, or none can be judged
	Oversized     // longer than MaxRecord
	numWhy
)

var whyNames = [numWhy]string{"ok", "malformed", "unknown", "no_client", "oversized"}

func (w Why) String() string { return whyNames[w] }

// Whys are the reasons a datagram is dropped, for the metric labels.
func Whys() []Why { return []Why{Malformed, Unknown, NoClient, Oversized} }

// Parser reads records. It is not safe for concurrent use; each reading
// goroutine has its own.
type Parser struct {
	// Trusted are the proxies whose X-Forwarded-For hops are believed in
	// Caddy's records, as on /forward-auth (DOORMAN_TRUSTED_PROXIES).
	Trusted *bart.Lite

	s   scanner
	xff [][]byte
}

// Parse reads one datagram into r.
func (p *Parser) Parse(d []byte, r *Record) Why {
	if len(d) > MaxRecord {
		return Oversized
	}
	msg, ok := Message(d)
	if !ok {
		return Malformed
	}
	*r = Record{}
	if cap(p.s.buf) < len(msg) {
		p.s.buf = make([]byte, 0, MaxRecord)
	}
	p.s = scanner{d: msg, buf: p.s.buf[:0]}
	p.xff = p.xff[:0]
	var f fields
	if !p.s.object(func(name []byte) bool { return p.top(name, &f, r) }) {
		return Malformed
	}
	if p.s.peek() != 0 {
		return Malformed // something after the object
	}
	switch {
	case f.has(fRequest):
		r.Format = Caddy
		if !f.has(fStatus | fRemote | fMethod | fURI) {
			return Malformed
		}
		return p.caddyClient(f.client, r)
	case f.has(fClient):
		r.Format = Flat
		if !f.has(fMethod | fURI | fStatus) {
			return Malformed
		}
		a, ok := parseAddr(f.client)
		if !ok {
			return NoClient
		}
		r.Client = a
		return OK
	}
	return Unknown
}

// fields is which members a record had, and the client's raw text.
type fields struct {
	seen   uint16
	client []byte
}

const (
	fClient = 1 << iota
	fMethod
	fHost
	fURI
	fStatus
	fRequestID
	fRequest
	fRemote
	fHeaders
	fXFF
)

func (f *fields) has(bits uint16) bool { return f.seen&bits == bits }

// once marks bit seen; a member given twice makes the record malformed, so
// that no one writer can be read two ways.
func (f *fields) once(bit uint16) bool {
	if f.seen&bit != 0 {
		return false
	}
	f.seen |= bit
	return true
}

// top reads one member of the record's object. Members of either format are
// accepted at the top; Parse checks that one format's are all there.
func (p *Parser) top(name []byte, f *fields, r *Record) bool {
	if ok, known := p.requestMember(name, f, r); known {
		return ok
	}
	switch string(name) {
	case "client":
		return f.once(fClient) && p.strInto(&f.client)
	case "request_id":
		return f.once(fRequestID) && p.strInto(&r.RequestID)
	case "status":
		return f.once(fStatus) && p.status(r)
	case "request":
		return f.once(fRequest) && p.s.object(func(name []byte) bool { return p.caddyRequest(name, f, r) })
	}
	return p.s.skip()
}

// caddyRequest reads one member of a Caddy entry's "request".
func (p *Parser) caddyRequest(name []byte, f *fields, r *Record) bool {
	if ok, known := p.requestMember(name, f, r); known {
		return ok
	}
	switch string(name) {
	case "remote_ip":
		return f.once(fRemote) && p.strInto(&f.client)
	case "headers":
		return f.once(fHeaders) && p.s.object(func(name []byte) bool {
			// Go's canonical form, as Caddy logs header names.
			if string(name) != "X-Forwarded-For" {
				return p.s.skip()
			}
			return f.once(fXFF) && p.s.array(func() bool {
				v, ok := p.s.str()
				p.xff = append(p.xff, v)
				return ok
			})
		})
	}
	return p.s.skip()
}

// requestMember reads a member both formats name alike (method, host, uri:
// at the top of a flat record, in a Caddy entry's "request"); known is false
// for any other name.
func (p *Parser) requestMember(name []byte, f *fields, r *Record) (ok, known bool) {
	switch string(name) {
	case "method":
		return f.once(fMethod) && p.strInto(&r.Method), true
	case "host":
		return f.once(fHost) && p.strInto(&r.Host), true
	case "uri":
		return f.once(fURI) && p.strInto(&r.URI), true
	}
	return false, false
}

func (p *Parser) strInto(dst *[]byte) bool {
	v, ok := p.s.str()
	*dst = v
	return ok
}

// status reads a status code, a number or a string of three digits.
func (p *Parser) status(r *Record) bool {
	var v []byte
	var ok bool
	if p.s.peek() == '"' {
		v, ok = p.s.str()
	} else {
		v, ok = p.s.number()
	}
	if !ok || len(v) != 3 {
		return false
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	r.Status = n
	return n >= 100
}

// caddyClient judges the client of a Caddy record as /forward-auth judges
// the request Caddy sends it: Caddy's forward_auth appends its peer to the
// X-Forwarded-For it received (from a peer it trusts) or sends the peer
// alone. So the peer is the client unless it is a trusted proxy; then the
// rightmost address of the logged X-Forwarded-For that is not.
func (p *Parser) caddyClient(remote []byte, r *Record) Why {
	peer, ok := parseAddr(remote)
	if !ok {
		return NoClient
	}
	if p.Trusted == nil || !p.Trusted.Lookup(peer) {
		r.Client = peer
		return OK
	}
	if len(p.xff) != 1 {
		return NoClient // none, or two lines: see forward.go
	}
	a, ok := ForwardedFor(p.xff[0], p.Trusted)
	if !ok {
		return NoClient
	}
	r.Client = a
	return OK
}

// ForwardedFor walks an X-Forwarded-For value from the right and returns
// the first address not in trusted. Elements are separated by commas with
// optional spaces or tabs and must be bare IPv4 or IPv6 addresses (no port,
// no brackets, no "unknown"): an element it has to read that is anything
// else ends the walk with no client. IPv4-mapped addresses count as IPv4.
func ForwardedFor(v []byte, trusted *bart.Lite) (netip.Addr, bool) {
	for end := len(v); ; {
		start := bytes.LastIndexByte(v[:end], ',') + 1
		a, ok := parseAddr(trimOWS(v[start:end]))
		if !ok {
			return netip.Addr{}, false
		}
		if !trusted.Lookup(a) {
			return a, true
		}
		if start == 0 {
			return netip.Addr{}, false // only trusted proxies: no client
		}
		end = start - 1
	}
}

// parseAddr parses a bare address and cleans it (decide.Clean).
func parseAddr(b []byte) (netip.Addr, bool) {
	// The string does not outlive this call: ParseAddr copies what it keeps.
	a, err := netip.ParseAddr(unsafe.String(unsafe.SliceData(b), len(b)))
	if err != nil {
		return netip.Addr{}, false
	}
	return decide.Clean(a), true
}

// trimOWS drops the optional white space (spaces and tabs) around a list
// element.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
