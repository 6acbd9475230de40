package engine

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// summary is "type key source" per entry, newest first.
func summary(t *testing.T, h *History, limit int) string {
	t.Helper()
	es, err := h.Last(limit)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		s := e.Type + " " + e.Key + " " + e.Source
		if e.Until.IsZero() != strings.HasSuffix(e.Type, "unban") {
			s += " (until wrong: " + e.Until.String() + ")"
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

func changes(t *testing.T, l *Local) {
	t.Helper()
	ctx := context.Background()
	for i := range 3 {
		if _, err := l.Fail(ctx, netip.MustParseAddr("192.0.2.7"), "", t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Ban(ctx, netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "scan", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Ban(ctx, netip.MustParsePrefix("2001:db8::1/128"), time.Hour, "", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Unban(ctx, netip.MustParseAddr("192.0.2.7"), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Remove(ctx, netip.MustParsePrefix("198.51.100.0/24"), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
}

const wantHistory = "range_unban 198.51.100.0/24 manual, unban 192.0.2.7/32 manual, ban 2001:db8::/64 manual, " +
	"range_ban 198.51.100.0/24 manual, ban 192.0.2.7/32 failures"

func TestHistoryInMemory(t *testing.T) {
	l := newLocal(t, 100, nil)
	h := l.NewHistory(4)
	changes(t, l)
	// Bounded: the oldest of five dropped.
	if got, want := summary(t, h, 10), wantHistory[:strings.LastIndex(wantHistory, ", ")]; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := summary(t, h, 2); got != "range_unban 198.51.100.0/24 manual, unban 192.0.2.7/32 manual" {
		t.Errorf("limit 2: got %s", got)
	}
}

func TestHistoryInStateFile(t *testing.T) {
	path := t.TempDir() + "/state.db"
	st := openStore(t, path)
	l := newLocal(t, 100, st)
	h := l.NewHistory(10)
	changes(t, l)
	if got := summary(t, h, 10); got != wantHistory {
		t.Errorf("got  %s\nwant %s", got, wantHistory)
	}
	st.Close()

	// After a restart, and bounded by the new maximum at the next change.
	st = openStore(t, path)
	defer st.Close()
	l = newLocal(t, 100, st)
	h = l.NewHistory(3)
	if got := summary(t, h, 10); got != "range_unban 198.51.100.0/24 manual, unban 192.0.2.7/32 manual, ban 2001:db8::/64 manual" {
		t.Errorf("after restart: got %s", got)
	}
	if _, err := l.Ban(context.Background(), netip.MustParsePrefix("10.0.0.0/8"), time.Hour, "", t0); err != nil {
		t.Fatal(err)
	}
	es, _ := h.Last(100)
	if len(es) != 3 || es[0].Key != "10.0.0.0/8" {
		t.Errorf("after a change with max 3: %d entries, newest %v", len(es), es)
	}
}

func TestHistoryOff(t *testing.T) {
	l := newLocal(t, 100, nil)
	h := l.NewHistory(0)
	changes(t, l)
	if es, err := h.Last(10); len(es) != 0 || err != nil {
		t.Errorf("max 0: got %v, %v; want nothing", es, err)
	}
}

func TestKind(t *testing.T) {
	l := newLocal(t, 100, nil)
	for _, tc := range []struct{ typ, key, want string }{
		{EventBan, "192.0.2.1/32", "ban"},
		{EventBan, "2001:db8::/64", "ban"},
		{EventBan, "2001:db8::/48", "range_ban"},
		{EventUnban, "10.0.0.0/8", "range_unban"},
		{EventUnban, "10.0.0.1/32", "unban"},
	} {
		if got := l.kind(Event{Type: tc.typ, Key: netip.MustParsePrefix(tc.key)}); got != tc.want {
			t.Errorf("%s %s: got %s, want %s", tc.typ, tc.key, got, tc.want)
		}
	}
}

// Observers get each event with its kind, as the history names it.
func TestEventKind(t *testing.T) {
	l := newLocal(t, 100, nil)
	var kinds []string
	l.OnEvent(func(e Event) { kinds = append(kinds, e.Kind) })
	for _, p := range []string{"10.0.0.0/8", "192.0.2.1/32"} {
		if _, err := l.Ban(context.Background(), netip.MustParsePrefix(p), time.Hour, "", t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Unban(context.Background(), netip.MustParseAddr("10.1.2.3"), t0); err != nil {
		t.Fatal(err)
	}
	want := []string{KindRangeBan, EventBan, KindRangeUnban}
	if !slices.Equal(kinds, want) {
		t.Errorf("kinds %v, want %v", kinds, want)
	}
}
