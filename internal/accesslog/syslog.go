package accesslog

// Message returns the message of one syslog datagram: RFC 5424
// ("<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG"), RFC 3164 as nginx and
// HAProxy write it ("<PRI>Mmm dd hh:mm:ss [HOST] TAG: MSG"), or a bare line
// (no "<"), which is its own message. One trailing newline (Caddy, bare
// lines) and a UTF-8 byte order mark (RFC 5424) are dropped. ok is false
// when the framing does not parse; nothing is copied.
func Message(d []byte) (msg []byte, ok bool) {
	if len(d) > 0 && d[len(d)-1] == '\n' {
		d = d[:len(d)-1]
	}
	if len(d) == 0 {
		return nil, false
	}
	if d[0] != '<' {
		return d, true
	}
	rest, ok := skipPRI(d)
	if !ok {
		return nil, false
	}
	if len(rest) >= 2 && rest[0] == '1' && rest[1] == ' ' {
		msg, ok = rfc5424(rest[2:])
	} else {
		msg, ok = rfc3164(rest)
	}
	if !ok {
		return nil, false
	}
	if len(msg) >= 3 && msg[0] == 0xEF && msg[1] == 0xBB && msg[2] == 0xBF {
		msg = msg[3:]
	}
	return msg, true
}

// skipPRI drops "<N>", N from 0 to 191 in at most three digits.
func skipPRI(d []byte) ([]byte, bool) {
	n, i := 0, 1
	for ; i < len(d) && i <= 4 && d[i] >= '0' && d[i] <= '9'; i++ {
		n = n*10 + int(d[i]-'0')
	}
	if i == 1 || i > 4 || i >= len(d) || d[i] != '>' || n > 191 {
		return nil, false
	}
	return d[i+1:], true
}

// rfc5424 skips TIMESTAMP HOSTNAME APP-NAME PROCID MSGID and the structured
// data; the rest, after one space, is the message.
func rfc5424(d []byte) ([]byte, bool) {
	for range 5 {
		i := indexSpace(d)
		if i <= 0 {
			return nil, false
		}
		d = d[i+1:]
	}
	if len(d) == 0 {
		return nil, false
	}
	if d[0] == '-' {
		d = d[1:]
	} else {
		var ok bool
		if d, ok = skipSD(d); !ok {
			return nil, false
		}
	}
	if len(d) == 0 {
		return d, true // no message
	}
	if d[0] != ' ' {
		return nil, false
	}
	return d[1:], true
}

// skipSD drops one or more SD-ELEMENTs, "[id k="v" ...]"; inside a quoted
// value \" and \] do not end it.
func skipSD(d []byte) ([]byte, bool) {
	if len(d) == 0 || d[0] != '[' {
		return nil, false
	}
	for len(d) > 0 && d[0] == '[' {
		i, quoted := 1, false
		for ; i < len(d); i++ {
			c := d[i]
			if quoted && c == '\\' {
				i++
				continue
			}
			if c == '"' {
				quoted = !quoted
			} else if c == ']' && !quoted {
				break
			}
		}
		if i >= len(d) {
			return nil, false
		}
		d = d[i+1:]
	}
	return d, true
}

// rfc3164 skips the timestamp ("Mmm dd hh:mm:ss", 15 bytes), then an
// optional host and the tag, up to the first ": " within maxHeader bytes.
func rfc3164(d []byte) ([]byte, bool) {
	const stamp = len("Dec  3 09:04:39")
	if len(d) < stamp+1 || d[stamp] != ' ' || d[3] != ' ' || d[6] != ' ' || d[9] != ':' || d[12] != ':' {
		return nil, false
	}
	d = d[stamp+1:]
	const maxHeader = 300 // a host name (255) and a tag (32) with its [pid]
	for i := 0; i+1 < len(d) && i < maxHeader; i++ {
		if d[i] == ':' && d[i+1] == ' ' {
			return d[i+2:], true
		}
		if d[i] < ' ' || d[i] == 0x7f {
			return nil, false
		}
	}
	return nil, false
}

func indexSpace(d []byte) int {
	for i, c := range d {
		if c == ' ' {
			return i
		}
	}
	return -1
}
