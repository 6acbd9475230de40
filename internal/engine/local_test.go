package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newLocal(t *testing.T, maxBans int, st *store.Store) *Local {
	t.Helper()
	p := decide.Policy{MaxFailures: 3, FindTime: 10 * time.Minute, BanTime: time.Hour, BanFactor: 2,
		MaxBanTime: 168 * time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}
	core := decide.New(p, nil, maxBans, 1000)
	return NewLocal(core, st, slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(core.Stats, false, func() time.Time { return t0 }))
}

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func stored(t *testing.T, st *store.Store) map[string]decide.Ban {
	t.Helper()
	recs, err := st.Load(t0, 1000*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]decide.Ban{}
	for _, b := range recs {
		out[b.Key.String()] = b
	}
	return out
}

func TestBansPersistBeforeAck(t *testing.T) {
	st := openStore(t, t.TempDir()+"/state.db")
	defer st.Close()
	l := newLocal(t, 1000, st)
	ctx := context.Background()
	ip := netip.MustParseAddr("203.0.113.7")
	for range 3 {
		if _, err := l.Fail(ctx, ip, "", t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Ban(ctx, netip.MustParsePrefix("2001:db8::1/128"), 2*time.Hour, "", t0); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, st); len(got) != 2 || got["203.0.113.7/32"].Count != 1 || !got["2001:db8::/64"].Manual {
		t.Fatalf("stored %v; want the failure ban and the manual /64", got)
	}
	if _, err := l.Unban(ctx, ip, t0); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, st); len(got) != 1 || got["2001:db8::/64"].Key.Bits() != 64 {
		t.Fatalf("after unban: %v", got)
	}
}

// Concurrent changes of one key, and a ban that evicts a key being renewed,
// leave on disk exactly what memory holds, whatever order the writes commit in.
func TestStoreFollowsMemory(t *testing.T) {
	st := openStore(t, t.TempDir()+"/state.db")
	defer st.Close()
	ctx := context.Background()
	for round := range 50 {
		l := newLocal(t, 2, st)
		now := t0.Add(time.Duration(round) * time.Second)
		p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
		for _, k := range []string{"10.0.0.1/32", "10.0.0.2/32"} {
			if _, err := l.Ban(ctx, p(k), time.Hour, "", now); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		wg.Go(func() { l.Ban(ctx, p("10.0.0.3/32"), time.Hour, "", now) })
		wg.Go(func() { l.Ban(ctx, p("10.0.0.1/32"), time.Hour, "", now) })
		wg.Go(func() { l.Unban(ctx, netip.MustParseAddr("10.0.0.2"), now) })
		wg.Go(func() { l.Ban(ctx, p("10.0.0.2/32"), time.Hour, "", now) })
		wg.Wait()
		disk := stored(t, st)
		mem := l.core.Records(now)
		if len(disk) != len(mem) {
			t.Fatalf("round %d: disk %v, memory %v", round, disk, mem)
		}
		for _, b := range mem {
			if d, ok := disk[b.Key.String()]; !ok || !d.Until.Equal(b.Until) || d.Count != b.Count {
				t.Fatalf("round %d: %v in memory, %v on disk", round, b, d)
			}
		}
		for _, b := range mem { // next round starts empty
			l.Remove(ctx, b.Key, now)
		}
	}
}

func TestNotSavedIsTyped(t *testing.T) {
	st := openStore(t, t.TempDir()+"/state.db")
	l := newLocal(t, 10, st)
	st.Close() // every write now fails
	_, err := l.Ban(context.Background(), netip.MustParsePrefix("192.0.2.1/32"), time.Hour, "", t0)
	if !errors.Is(err, ErrNotSaved) {
		t.Fatalf("err = %v, want ErrNotSaved", err)
	}
	if v := l.Decide(netip.MustParseAddr("192.0.2.1"), t0); v.Allow {
		t.Fatal("the ban must hold in memory though not saved")
	}
}

func TestEventsObserved(t *testing.T) {
	l := newLocal(t, 10, nil)
	var got []Event
	l.OnEvent(func(e Event) { got = append(got, e) })
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.9")
	for range 3 {
		l.Fail(ctx, ip, "", t0)
	}
	l.Unban(ctx, ip, t0)
	if len(got) != 2 || got[0].Type != EventBan || got[0].Source != SourceFailures || got[1].Type != EventUnban ||
		got[0].Key.String() != "192.0.2.9/32" || !got[0].Until.Equal(t0.Add(time.Hour)) {
		t.Fatalf("events = %+v", got)
	}
}

// A failure answered "banned" by a ban another call put in memory returns
// only once that ban is in the state file.
func TestCoveredAnswerIsSaved(t *testing.T) {
	st := openStore(t, t.TempDir()+"/state.db")
	defer st.Close()
	l := newLocal(t, 100, st)
	r := decide.Ban{Key: netip.MustParsePrefix("198.51.100.0/24"), Until: t0.Add(time.Hour), Range: true, Count: 1}
	if _, err := l.core.Apply(r, t0); err != nil { // in memory, as a concurrent call leaves it before its write
		t.Fatal(err)
	}
	res, err := l.Fail(context.Background(), netip.MustParseAddr("198.51.100.7"), "", t0)
	if err != nil || !res.InForce() || res.Ban.Key != r.Key {
		t.Fatalf("covered failure: %+v %v", res, err)
	}
	if got := stored(t, st); !got["198.51.100.0/24"].Range || !got["198.51.100.0/24"].Until.Equal(r.Until) {
		t.Fatalf("stored %v; the range ban the answer reported is not on disk", got)
	}
}

// A NAT64 address is its embedded IPv4 address for every question a backend
// asks of the memory (cluster mode counts, logs and exempts by it).
func TestNAT64AddressesAsJudged(t *testing.T) {
	p := decide.Policy{MaxFailures: 3, FindTime: time.Minute, BanTime: time.Hour, BanFactor: 2, MaxBanTime: 2 * time.Hour,
		IPv4Prefix: 32, IPv6Prefix: 64, NAT64: []netip.Prefix{netip.MustParsePrefix("64:ff9b::/96")}}
	never := []netip.Prefix{netip.MustParsePrefix("198.51.100.9/32")}
	core := decide.New(p, decide.NewLists(nil, nil, never), 10, 10)
	l := NewLocal(core, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(core.Stats, false, time.Now))
	mem := l.Memory()
	a := netip.MustParseAddr("64:ff9b::c633:6409")
	if got := mem.Core().Addr(a).String(); got != "198.51.100.9" {
		t.Errorf("Addr = %s, want 198.51.100.9", got)
	}
	if got := mem.Core().Unit(a).String(); got != "198.51.100.9/32" {
		t.Errorf("Unit = %s, want 198.51.100.9/32", got)
	}
	if !mem.Core().Lists().NeverBan(mem.Core().Addr(a)) {
		t.Error("NeverBan of the translated address: false, want true")
	}
	if got := mem.Unban(context.Background(), a, t0).IP; got != "198.51.100.9" {
		t.Errorf("Unban names %s, want 198.51.100.9", got)
	}
}

// Lift lifts an address's bans or exactly a CIDR ban; Active leaves out the
// expired records an unban also forgets.
func TestLift(t *testing.T) {
	l := newLocal(t, 1000, nil)
	ctx := context.Background()
	for _, p := range []string{"192.0.2.7/32", "198.51.100.0/24"} {
		if _, err := l.Ban(ctx, netip.MustParsePrefix(p), time.Hour, "", t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Ban(ctx, netip.MustParsePrefix("192.0.2.0/24"), time.Minute, "", t0); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(30 * time.Minute) // the /24 over 192.0.2.7 has ended
	for _, tc := range []struct {
		addr, prefix string
		want         int
	}{{"192.0.2.7", "", 1}, {"", "198.51.100.0/24", 1}, {"", "203.0.113.0/24", 0}, {"192.0.2.7", "", 0}} {
		var a netip.Addr
		var p netip.Prefix
		if tc.addr != "" {
			a = netip.MustParseAddr(tc.addr)
		} else {
			p = netip.MustParsePrefix(tc.prefix)
		}
		lifted, err := l.Lift(ctx, a, p, now)
		if got := lifted.Active(now); err != nil || len(got) != tc.want {
			t.Errorf("Lift %s%s: %v, %v; want %d in force", tc.addr, tc.prefix, got, err, tc.want)
		}
	}
}
