package api

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Visible returns s as it may be shown to a person, on a terminal, in a
// page or in a table: s itself when every rune is printable (strconv.IsPrint,
// the space included) and it holds no quote or backslash, else
// strconv.Quote(s). Quoted, a control character shows as \n, \r, \x1b or
// \x7f and a format character as \u202e, so a name or a note cannot add a
// line, move the cursor, colour the terminal, open an OSC 8 link or reorder
// what is read; the quotes say that what is shown was escaped.
func Visible(s string) string {
	if Printable(s) && !strings.ContainsAny(s, `"\`) {
		return s
	}
	return strconv.Quote(s)
}

// Printable reports whether s is valid UTF-8 of printable runes and spaces
// only (strconv.IsPrint): no control, format or separator character.
func Printable(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !strconv.IsPrint(r) }) < 0
}
