package decide

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzNormalizeUsername checks that a key is stable (normalising it again
// changes nothing), bounded, valid UTF-8 and trimmed, that ASCII's fast path
// agrees with the general one, and that errors are the documented ones.
func FuzzNormalizeUsername(f *testing.F) {
	for _, s := range []string{"admin", "ADMIN ", "ａｄｍｉｎ", "\u212Aelvin", "Straße", "İstanbul", "ǅemal", "\u0345", " \u0301", "\uFDFA", "a\xff", strings.Repeat("x", 257)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := NormalizeUsername(s)
		if err != nil {
			if got != "" {
				t.Fatalf("NormalizeUsername(%q) = %q with error %v", s, got, err)
			}
			// Valid UTF-8 within the limit fails only by growing past it
			// or by holding a control or format character.
			if len(s) <= MaxUsername && utf8.ValidString(s) && err != ErrUsernameTooLong && err != ErrUsernameControl {
				t.Fatalf("NormalizeUsername(%q): %v", s, err)
			}
			return
		}
		if len(got) > MaxUsername || !utf8.ValidString(got) || got != strings.TrimSpace(got) || strings.IndexFunc(got, unsafeRune) >= 0 {
			t.Fatalf("NormalizeUsername(%q) = %q: too long, not UTF-8, not trimmed or with a control character", s, got)
		}
		again, err := NormalizeUsername(got)
		if err != nil || again != got {
			t.Fatalf("not stable: %q -> %q -> %q, %v", s, got, again, err)
		}
		if ascii(s) {
			slow := strings.TrimSpace(s)
			if u, err := NormalizeUsername(strings.ToUpper(s)); err != nil || u != got {
				t.Fatalf("ASCII %q and its upper case differ: %q, %q", s, got, u)
			}
			if strings.ToLower(slow) != got {
				t.Fatalf("ASCII %q -> %q, want %q", s, got, strings.ToLower(slow))
			}
		}
	})
}

// FuzzDeviceToken checks that Verify never accepts a token it did not issue
// for that account, and that whatever it accepts is the issued token itself,
// in its one spelling.
func FuzzDeviceToken(f *testing.F) {
	k := testKey(f, 1)
	good := k.Issue("admin", a0.Add(time.Hour), [8]byte{9})
	f.Add(good, "admin")
	f.Add(good, "root")
	f.Add(flipLast(good), "admin")
	f.Add(good[:len(good)-1]+"B", "admin")
	f.Add("", "")
	f.Add(strings.Repeat("A", DeviceTokenLen), "admin")
	f.Fuzz(func(t *testing.T, token, user string) {
		id, err := k.Verify(token, user, a0)
		if err != nil {
			return
		}
		if token != good || user != "admin" {
			t.Fatalf("Verify accepted %q for %q; only %q for admin was issued", token, user, good)
		}
		if id == (DeviceID{}) {
			t.Fatal("valid token with a zero id")
		}
	})
}
