package decide

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// MaxUsername is the longest username accepted, in bytes, before and after
// normalisation. The bound keeps an account's key small (the tracker holds up
// to DOORMAN_MAX_ACCOUNTS of them) and NFKC's expansion (up to 18 code points
// for one) from growing it unseen.
const MaxUsername = 256

// Username errors. NormalizeUsername wraps them with the offending length.
var (
	ErrUsernameTooLong = errors.New("longer than 256 bytes")
	ErrUsernameUTF8    = errors.New("not valid UTF-8")
	// ErrUsernameControl: a control character (C0, DEL, C1), a format
	// character (bidi overrides and isolates, zero-width characters) or a
	// line or paragraph separator left after trimming. Such a name can forge
	// a line, recolour or reorder what an operator reads, or look like
	// another name; no login form needs one.
	ErrUsernameControl = errors.New("has a control or format character")
)

// NormalizeUsername returns the account key of a username as typed: Unicode
// NFKC, case-folded, NFKC again (folding can leave a string that is not in
// NFKC), surrounding white space trimmed. "admin", "Admin", "ADMIN " and the
// fullwidth "ａｄｍｉｎ" are one account. An empty result (nothing but white
// space) means no account. Normalising twice gives the same key.
//
// The key is what the tracker, the state file, Redis, the API and the logs
// hold, so one person reaches one account however the name is typed; it is
// never shown back to the app as a hint that the account exists.
//
// White space around the name is trimmed; a control or format character
// left inside it is ErrUsernameControl.
func NormalizeUsername(s string) (string, error) {
	if len(s) > MaxUsername {
		return "", ErrUsernameTooLong
	}
	if ascii(s) {
		// NFKC changes no ASCII, and folding ASCII is lowering it.
		u := strings.TrimSpace(strings.ToLower(s))
		for i := 0; i < len(u); i++ {
			if u[i] < 0x20 || u[i] == 0x7f {
				return "", ErrUsernameControl
			}
		}
		return u, nil
	}
	if !utf8.ValidString(s) {
		return "", ErrUsernameUTF8
	}
	u := s
	// Three rounds reach a fixed point for every string the fuzz target has
	// found; a string that still changes is refused rather than counted
	// under a key that a second pass would change.
	for range 3 {
		folded := strings.Map(cherokee, cases.Fold().String(norm.NFKC.String(u)))
		next := strings.TrimSpace(norm.NFKC.String(folded))
		if len(next) > MaxUsername {
			return "", ErrUsernameTooLong
		}
		if next == u {
			if strings.IndexFunc(u, unsafeRune) >= 0 {
				return "", ErrUsernameControl
			}
			return u, nil
		}
		u = next
	}
	return "", errors.New("has no stable normal form")
}

// cherokee maps lowercase Cherokee to uppercase, as Unicode's case folding
// does (CaseFolding.txt: AB70 -> 13A0, 13F8 -> 13F0). x/text's Fold maps
// uppercase Cherokee to lowercase and back, so without this "Ꮪ" and "ꮪ"
// would swap on every pass and have no stable key.
func cherokee(r rune) rune {
	switch {
	case r >= 0xAB70 && r <= 0xABBF:
		return r - 0xAB70 + 0x13A0
	case r >= 0x13F8 && r <= 0x13FD:
		return r - 8
	}
	return r
}

// unsafeRune reports a rune a username may not hold: Cc (C0, DEL, C1), Cf
// (U+200B–U+200F, U+202A–U+202E, U+2066–U+2069, U+FEFF, …), Zl and Zp.
func unsafeRune(r rune) bool {
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
