package api

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/doorman/doorman/decide"
)

// The input rules of the API, the status page and the CLI, written once.

// MaxManualBan is the longest manual ban (engine.MaxManualBan, which the
// cluster also applies to bans learned from Redis).
const MaxManualBan = 10 * 365 * 24 * time.Hour

// MinManualBan is the shortest: a shorter ban would be answered 201 and be
// over before the next request.
const MinManualBan = time.Second

// MaxNote is the longest note kept with a manual ban, in bytes.
const MaxNote = 256

// FieldError is bad input, naming the field (as the API's JSON names it).
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("%q: %v", e.Field, e.Err) }
func (e *FieldError) Unwrap() error { return e.Err }

// Ban is a manual ban as asked for.
type Ban struct {
	Prefix   netip.Prefix  // an address is its /32 or /128; the service widens it to its ban unit
	Duration time.Duration // 0: the escalating ban time
	Note     string
}

// ParseBan checks a manual ban: target an IP or CIDR (white space around it
// ignored), duration empty or from MinManualBan to MaxManualBan, note at most
// MaxNote bytes. Errors are *FieldError for "ip", "duration" or "reason".
// How wide a CIDR may be is the ban table's rule (decide.ErrTooWide).
func ParseBan(target, duration, note string) (Ban, error) {
	var b Ban
	target = strings.TrimSpace(target)
	if target == "" {
		return b, &FieldError{"ip", errors.New("missing: an IP or CIDR")}
	}
	p, err := decide.ParsePrefix(target)
	if err != nil {
		return b, &FieldError{"ip", err}
	}
	b.Prefix = p
	if b.Duration, err = ParseBanDuration(duration); err != nil {
		return b, &FieldError{"duration", err}
	}
	if len(note) > MaxNote {
		return b, &FieldError{"reason", fmt.Errorf("longer than %d bytes", MaxNote)}
	}
	b.Note = note
	return b, nil
}

// ParseBanDuration parses a manual ban's length: "" is 0 (the escalating
// ban time), else a Go duration from MinManualBan to MaxManualBan.
func ParseBanDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < MinManualBan || d > MaxManualBan {
		return 0, fmt.Errorf("%q is not a duration from %v to %dh (e.g. 90s, 1h)", cut(s, 32), MinManualBan, MaxManualBan/time.Hour)
	}
	return d, nil
}

// Unban is what an unban names: an address lifts every ban covering it (its
// unit's and any CIDR ban holding it); a CIDR lifts exactly that ban.
type Unban struct {
	Addr   netip.Addr   // valid for an address
	Prefix netip.Prefix // valid for a CIDR
}

// ParseUnban parses an unban's target (white space around it ignored).
func ParseUnban(target string) (Unban, error) {
	target = strings.TrimSpace(target)
	if target == "" {
		return Unban{}, errors.New("missing: an IP address or a ban's CIDR")
	}
	if strings.Contains(target, "/") {
		p, err := decide.ParsePrefix(target)
		return Unban{Prefix: p}, err
	}
	a, err := netip.ParseAddr(target)
	if err != nil || a.Zone() != "" {
		return Unban{}, fmt.Errorf("%q is not an IP address or a ban's CIDR", cut(target, 64))
	}
	return Unban{Addr: a}, nil
}

// Username normalises a username as typed (decide.NormalizeUsername): ""
// when none was given. One that cannot be normalised (too long, not UTF-8,
// a control or format character) is a *FieldError for "username".
func Username(raw string) (string, error) {
	u, err := decide.NormalizeUsername(raw)
	if err != nil {
		return "", &FieldError{"username", err}
	}
	return u, nil
}

// cut shortens s to n bytes on a rune boundary, for an error message.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
