package decide

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func mustList(t testing.TB, s string) []netip.Prefix {
	t.Helper()
	l, err := ParseList(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func defaultPolicy() Policy {
	return Policy{MaxFailures: 3, FindTime: 10 * time.Minute, BanTime: time.Hour, BanFactor: 2,
		MaxBanTime: 168 * time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}
}

func newCore(t testing.TB, allow, deny, never string) *Core {
	t.Helper()
	return New(defaultPolicy(), NewLists(mustList(t, allow), mustList(t, deny), mustList(t, never)), 100, 100)
}

func TestDecideOrder(t *testing.T) {
	c := newCore(t, "10.0.0.0/8,2001:db8::/32", "10.9.0.0/16,2001:db8:dead::/48", "10.1.1.1")
	for _, ip := range []string{"10.2.2.2", "10.1.1.1", "10.9.1.1"} {
		if _, _, err := c.BanPrefix(netip.MustParsePrefix(ip+"/32"), time.Hour, "", t0); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		ip    string
		allow bool
		want  Reason
	}{
		{"allowlisted", "10.3.3.3", true, Allowed},
		{"denylisted inside allow list", "10.9.9.9", false, Denylisted},
		{"deny beats ban", "10.9.1.1", false, Denylisted},
		{"outside allow list", "192.0.2.1", false, NotAllowlisted},
		{"banned", "10.2.2.2", false, Banned},
		{"never-ban beats ban", "10.1.1.1", true, Allowed},
		{"ipv4-mapped is unmapped", "::ffff:10.2.2.2", false, Banned},
		{"ipv4-mapped denylisted", "::ffff:10.9.9.9", false, Denylisted},
		{"ipv6 allowed", "2001:db8::1", true, Allowed},
		{"ipv6 zone dropped", "2001:db8:dead::1%eth0", false, Denylisted},
		{"ipv6 outside allow", "2001:db9::1", false, NotAllowlisted},
		{"invalid address", "", false, NoClientIP},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a netip.Addr
			if tc.ip != "" {
				a = netip.MustParseAddr(tc.ip)
			}
			got := c.Decide(a, t0.Add(time.Minute))
			if got.Allow != tc.allow || got.Reason != tc.want {
				t.Errorf("Decide(%s) = %v/%v, want %v/%v", tc.ip, got.Allow, got.Reason, tc.allow, tc.want)
			}
		})
	}
}

func TestEmptyAllowListAllowsAll(t *testing.T) {
	c := newCore(t, "", "", "")
	for _, ip := range []string{"192.0.2.1", "2001:db8::1", "127.0.0.1"} {
		if v := c.Decide(netip.MustParseAddr(ip), t0); !v.Allow {
			t.Errorf("Decide(%s) = %v, want allow", ip, v.Reason)
		}
	}
}

func TestFailuresBanAtThreshold(t *testing.T) {
	c := newCore(t, "", "", "")
	a := netip.MustParseAddr("203.0.113.7")
	for i := 1; i <= 3; i++ {
		res := c.Fail(a, t0.Add(time.Duration(i)*time.Second))
		if res.Failures != i {
			t.Fatalf("failure %d: count = %d", i, res.Failures)
		}
		if got, want := res.Banned, i == 3; got != want {
			t.Fatalf("failure %d: banned = %v, want %v", i, got, want)
		}
	}
	v := c.Decide(a, t0.Add(4*time.Second))
	if v.Reason != Banned || !v.Until.Equal(t0.Add(3*time.Second+time.Hour)) {
		t.Fatalf("after ban: %+v", v)
	}
	if v := c.Decide(netip.MustParseAddr("203.0.113.8"), t0); !v.Allow {
		t.Errorf("neighbour denied: %v", v.Reason)
	}
	if v := c.Decide(a, t0.Add(3*time.Second+time.Hour)); !v.Allow {
		t.Errorf("ban did not expire: %v", v.Reason)
	}
}

func TestSlidingWindow(t *testing.T) {
	c := newCore(t, "", "", "")
	a := netip.MustParseAddr("203.0.113.7")
	// Failures 6 minutes apart: never 3 inside any 10-minute window.
	for i := range 10 {
		if res := c.Fail(a, t0.Add(time.Duration(i)*6*time.Minute)); res.Banned || res.Failures > 2 {
			t.Fatalf("failure %d: %+v", i, res)
		}
	}
	// Three inside the window ban, even when the first came just before.
	c.Fail(a, t0.Add(time.Hour))
	c.Fail(a, t0.Add(time.Hour+9*time.Minute))
	if res := c.Fail(a, t0.Add(time.Hour+9*time.Minute+59*time.Second)); !res.Banned {
		t.Fatalf("third failure inside the window did not ban: %+v", res)
	}
}

func TestSuccessResetsFailures(t *testing.T) {
	c := newCore(t, "", "", "")
	a := netip.MustParseAddr("203.0.113.7")
	c.Fail(a, t0)
	c.Fail(a, t0)
	c.Succeed(a)
	if res := c.Fail(a, t0); res.Failures != 1 || res.Banned {
		t.Fatalf("after success: %+v", res)
	}
}

func TestSuccessKeepsBan(t *testing.T) {
	c := newCore(t, "", "", "")
	a := netip.MustParseAddr("203.0.113.7")
	for range 3 {
		c.Fail(a, t0)
	}
	c.Succeed(a)
	if v := c.Decide(a, t0); v.Reason != Banned {
		t.Fatalf("success lifted the ban: %v", v.Reason)
	}
}

func TestIPv6Unit(t *testing.T) {
	c := newCore(t, "", "", "")
	// Three addresses in one /64 are one client.
	for i, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2:aaaa::5", "2001:db8:1:2:ffff:ffff:ffff:ffff"} {
		res := c.Fail(netip.MustParseAddr(ip), t0)
		if res.Key != netip.MustParsePrefix("2001:db8:1:2::/64") {
			t.Fatalf("key = %s", res.Key)
		}
		if res.Failures != i+1 {
			t.Fatalf("failures = %d, want %d", res.Failures, i+1)
		}
	}
	if v := c.Decide(netip.MustParseAddr("2001:db8:1:2:1234::9"), t0); v.Reason != Banned {
		t.Errorf("another address in the /64: %v, want banned", v.Reason)
	}
	if v := c.Decide(netip.MustParseAddr("2001:db8:1:3::1"), t0); !v.Allow {
		t.Errorf("the next /64: %v, want allowed", v.Reason)
	}
}

func TestIPv4UnitPrefix(t *testing.T) {
	p := defaultPolicy()
	p.IPv4Prefix = 24
	c := New(p, nil, 10, 10)
	for _, ip := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"} {
		c.Fail(netip.MustParseAddr(ip), t0)
	}
	if v := c.Decide(netip.MustParseAddr("198.51.100.200"), t0); v.Reason != Banned || v.Key.String() != "198.51.100.0/24" {
		t.Errorf("got %+v, want banned by 198.51.100.0/24", v)
	}
}

func TestNeverBan(t *testing.T) {
	c := newCore(t, "", "", "192.0.2.0/24")
	a := netip.MustParseAddr("192.0.2.9")
	var res FailResult
	for range 5 {
		res = c.Fail(a, t0)
	}
	if res.Banned || !res.NeverBan || res.Failures != 3 {
		t.Fatalf("never-ban: %+v, want counted (3), not banned", res)
	}
	if v := c.Decide(a, t0); !v.Allow {
		t.Fatalf("never-ban address denied: %v", v.Reason)
	}
}

func TestEscalation(t *testing.T) {
	p := defaultPolicy()
	p.MaxBanTime = 5 * time.Hour
	c := New(p, nil, 10, 10)
	a := netip.MustParseAddr("203.0.113.7")
	now := t0
	for i, want := range []time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour, 5 * time.Hour, 5 * time.Hour} {
		var res FailResult
		for range 3 {
			res = c.Fail(a, now)
		}
		if !res.Banned {
			t.Fatalf("ban %d: not banned", i+1)
		}
		if got := res.Ban.Until.Sub(now); got != want || res.Ban.Count != i+1 {
			t.Fatalf("ban %d: %v (count %d), want %v (count %d)", i+1, got, res.Ban.Count, want, i+1)
		}
		now = res.Ban.Until.Add(time.Minute) // the next offence comes after the ban ends
	}
	// After MaxBanTime without a ban the count is forgotten.
	now = now.Add(p.MaxBanTime + time.Hour)
	var res FailResult
	for range 3 {
		res = c.Fail(a, now)
	}
	if res.Ban.Count != 1 || res.Ban.Until.Sub(now) != time.Hour {
		t.Fatalf("after the memory: count %d, length %v; want 1, 1h", res.Ban.Count, res.Ban.Until.Sub(now))
	}
}

func TestManualBans(t *testing.T) {
	c := newCore(t, "", "", "")
	b, _, err := c.BanPrefix(netip.MustParsePrefix("198.51.100.0/24"), 30*time.Minute, "scanner", t0)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Manual || b.Note != "scanner" || b.Reason() != "manual" {
		t.Fatalf("ban = %+v", b)
	}
	if v := c.Decide(netip.MustParseAddr("198.51.100.77"), t0); v.Reason != Banned || v.Key != b.Key {
		t.Fatalf("inside the range: %+v", v)
	}
	// A single IPv6 address bans its unit.
	b6, _, _ := c.BanPrefix(netip.MustParsePrefix("2001:db8::5/128"), 0, "", t0)
	if b6.Key.String() != "2001:db8::/64" || b6.Until.Sub(t0) != time.Hour {
		t.Fatalf("ipv6 manual ban = %+v, want 2001:db8::/64 for 1h", b6)
	}
	// Unban by an address inside the range lifts the range.
	lifted := c.Unban(netip.MustParseAddr("198.51.100.1"))
	if len(lifted) != 1 || lifted[0].Key != b.Key {
		t.Fatalf("unban lifted %v", lifted)
	}
	if v := c.Decide(netip.MustParseAddr("198.51.100.77"), t0); !v.Allow {
		t.Fatalf("after unban: %v", v.Reason)
	}
	if got := c.Unban(netip.MustParseAddr("198.51.100.1")); len(got) != 0 {
		t.Fatalf("second unban lifted %v", got)
	}
}

func TestExpiredRangeDoesNotShadow(t *testing.T) {
	c := newCore(t, "", "", "")
	c.BanPrefix(netip.MustParsePrefix("10.0.0.0/8"), 2*time.Hour, "", t0)
	c.BanPrefix(netip.MustParsePrefix("10.1.0.0/16"), time.Hour, "", t0)
	v := c.Decide(netip.MustParseAddr("10.1.2.3"), t0.Add(90*time.Minute))
	if v.Reason != Banned || v.Key.String() != "10.0.0.0/8" {
		t.Fatalf("got %+v, want banned by 10.0.0.0/8", v)
	}
}

// failBan bans a's unit through failures at now.
func failBan(t *testing.T, c *Core, a string, now time.Time) FailResult {
	t.Helper()
	var res FailResult
	for range c.Policy().MaxFailures {
		res = c.Fail(netip.MustParseAddr(a), now)
	}
	if !res.Banned && !res.Refused {
		t.Fatalf("%s: %+v, want a ban", a, res)
	}
	return res
}

// A full table evicts expired records first, then the automatic ban that
// ends soonest, and never an active manual ban.
func TestEvictionOrder(t *testing.T) {
	c := New(defaultPolicy(), nil, 3, 100)
	if _, _, err := c.BanPrefix(netip.MustParsePrefix("203.0.113.1/32"), 168*time.Hour, "", t0); err != nil {
		t.Fatal(err)
	}
	failBan(t, c, "192.0.2.1", t0)                  // ends t0+1h
	failBan(t, c, "192.0.2.2", t0.Add(time.Minute)) // ends t0+1h1m
	later := t0.Add(2 * time.Hour)                  // both expired
	if ev := failBan(t, c, "192.0.2.3", later).Evicted; len(ev) != 1 || ev[0].Key.String() != "192.0.2.1/32" {
		t.Fatalf("evicted %v, want the record that expired first, 192.0.2.1/32", ev)
	}
	if ev := failBan(t, c, "192.0.2.4", later.Add(time.Second)).Evicted; len(ev) != 1 || ev[0].Key.String() != "192.0.2.2/32" {
		t.Fatalf("evicted %v, want the other expired record, 192.0.2.2/32", ev)
	}
	// No expired record left: the automatic ban that ends soonest goes.
	if ev := failBan(t, c, "192.0.2.5", later.Add(time.Minute)).Evicted; len(ev) != 1 || ev[0].Key.String() != "192.0.2.3/32" {
		t.Fatalf("evicted %v, want the active automatic ban ending first, 192.0.2.3/32", ev)
	}
	if v := c.Decide(netip.MustParseAddr("203.0.113.1"), later.Add(time.Minute)); v.Reason != Banned {
		t.Fatalf("the manual ban was lost: %+v", v)
	}
	// Only manual bans left: a new manual ban is refused, nothing changes.
	for _, ip := range []string{"203.0.113.2", "203.0.113.3"} {
		if _, _, err := c.BanPrefix(netip.MustParsePrefix(ip+"/32"), 168*time.Hour, "", later.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.BanPrefix(netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "", later.Add(time.Minute)); err != ErrTableFull {
		t.Fatalf("err = %v, want ErrTableFull", err)
	}
	if res := failBan(t, c, "192.0.2.9", later.Add(time.Minute)); !res.Refused || res.InForce() {
		t.Fatalf("failure ban in a table of manual bans: %+v, want refused", res)
	}
	for _, ip := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"} {
		if v := c.Decide(netip.MustParseAddr(ip), later.Add(time.Minute)); v.Reason != Banned {
			t.Fatalf("%s: %+v, want banned", ip, v)
		}
	}
	// An expired manual ban is evictable.
	if _, ev, err := c.BanPrefix(netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "", t0.Add(169*time.Hour)); err != nil || len(ev) != 1 {
		t.Fatalf("evicted %v, err %v: want an expired manual record evicted", ev, err)
	}
}

func TestRangeEscalation(t *testing.T) {
	p := defaultPolicy()
	p.RangeThreshold, p.IPv4RangePrefix, p.IPv6RangePrefix = 3, 24, 48
	p.NAT64 = []netip.Prefix{netip.MustParsePrefix("64:ff9b::/96")}
	c := New(p, NewLists(nil, nil, mustList(t, "2001:db8:1:ff::/64")), 100, 100)
	failBan(t, c, "2001:db8:1:1::1", t0)
	failBan(t, c, "2001:db8:1:2::1", t0)
	res := failBan(t, c, "2001:db8:1:3::1", t0)
	if !res.Range || res.Ban.Key.String() != "2001:db8:1::/48" || res.Ban.Reason() != "range" || len(res.Folded) != 3 {
		t.Fatalf("third unit ban in the /48: %+v, want a range ban folding 3 units", res)
	}
	if got := c.Stats(t0).BanRecords; got != 1 {
		t.Fatalf("%d records, want 1 (the units folded into the range)", got)
	}
	// Any address in the range is banned; a new one adds no record.
	if v := c.Decide(netip.MustParseAddr("2001:db8:1:77::5"), t0); v.Reason != Banned || v.Key.String() != "2001:db8:1::/48" {
		t.Fatalf("decide inside the range: %+v", v)
	}
	if r := c.Fail(netip.MustParseAddr("2001:db8:1:78::5"), t0); !r.InForce() || r.Banned || r.Ban.Key.String() != "2001:db8:1::/48" {
		t.Fatalf("failure inside the range: %+v, want reported banned by the range, no new ban", r)
	}
	if got := c.Stats(t0).BanRecords + c.Stats(t0).Tracked; got != 1 {
		t.Fatalf("%d records after a covered failure, want 1", got)
	}
	// Never-ban addresses are not covered.
	if v := c.Decide(netip.MustParseAddr("2001:db8:1:ff::1"), t0); !v.Allow {
		t.Fatalf("never-ban address inside a range ban: %+v", v)
	}
	// Units banned at different times do not add up once expired.
	failBan(t, c, "192.0.2.1", t0)
	failBan(t, c, "192.0.2.2", t0.Add(2*time.Hour))
	if res := failBan(t, c, "192.0.2.3", t0.Add(2*time.Hour)); res.Range {
		t.Fatalf("an expired unit ban counted toward the range: %+v", res)
	}
	// The second range ban of a range escalates.
	c.Unban(netip.MustParseAddr("2001:db8:1:77::5"))
	for i := range 3 {
		res = failBan(t, c, fmt.Sprintf("2001:db8:1:%x::1", 10+i), t0.Add(time.Minute))
	}
	if !res.Range || res.Ban.Count != 1 {
		t.Fatalf("after an unban (which forgets the count): %+v", res)
	}
	// NAT64: a translated client is its IPv4 address.
	failBan(t, c, "64:ff9b::c633:6409", t0) // 198.51.100.9
	if v := c.Decide(netip.MustParseAddr("198.51.100.9"), t0); v.Reason != Banned || v.Key.String() != "198.51.100.9/32" {
		t.Fatalf("NAT64 client: %+v, want its IPv4 address banned", v)
	}
	if v := c.Decide(netip.MustParseAddr("64:ff9b::c633:640a"), t0); !v.Allow {
		t.Fatalf("another NAT64 client: %+v, want allowed", v)
	}
}

func TestTooWide(t *testing.T) {
	c := newCore(t, "", "", "")
	for _, s := range []string{"0.0.0.0/0", "::/0", "10.0.0.0/7", "2001::/31", "::ffff:0:0/96"} {
		p, err := ParsePrefix(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.BanPrefix(p, time.Hour, "", t0); err != ErrTooWide {
			t.Errorf("BanPrefix(%s): %v, want ErrTooWide", s, err)
		}
		if _, err := c.Apply(Ban{Key: p, Until: t0.Add(time.Hour)}, t0); err != ErrTooWide {
			t.Errorf("Apply(%s): %v, want ErrTooWide", s, err)
		}
	}
	for _, s := range []string{"10.0.0.0/8", "2001:db8::/32"} {
		if _, _, err := c.BanPrefix(netip.MustParsePrefix(s), time.Hour, "", t0); err != nil {
			t.Errorf("BanPrefix(%s): %v", s, err)
		}
	}
}

func TestJitter(t *testing.T) {
	p := defaultPolicy()
	p.Jitter = 0.1
	c := New(p, nil, 100, 100)
	c.SetRandom(func() float64 { return 0.5 })
	if b := failBan(t, c, "192.0.2.1", t0).Ban; !b.Until.Equal(t0.Add(time.Hour + 3*time.Minute)) {
		t.Fatalf("until %v, want 1h + 5%%", b.Until.Sub(t0))
	}
	if b, _, _ := c.BanPrefix(netip.MustParsePrefix("192.0.2.2/32"), time.Hour, "", t0); !b.Until.Equal(t0.Add(time.Hour)) {
		t.Fatalf("manual ban with a duration: %v, want exactly 1h", b.Until.Sub(t0))
	}
}

func TestTrackerBound(t *testing.T) {
	c := New(defaultPolicy(), nil, 10, 2)
	evictions := 0
	for i := range 5 {
		if c.Fail(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), t0.Add(time.Duration(i))).TrackerEvicted {
			evictions++
		}
	}
	if got := c.Stats(t0).Tracked; got != 2 {
		t.Fatalf("tracker holds %d, want 2", got)
	}
	if evictions != 3 {
		t.Fatalf("evictions = %d, want 3", evictions)
	}
	// The least recently failing were dropped: .3 and .4 are still counted.
	if n := c.Failures(netip.MustParseAddr("192.0.2.4"), t0); n != 1 {
		t.Fatalf("newest unit: %d failures, want 1", n)
	}
	if n := c.Failures(netip.MustParseAddr("192.0.2.0"), t0); n != 0 {
		t.Fatalf("oldest unit: %d failures, want 0 (evicted)", n)
	}
}

func TestActiveCount(t *testing.T) {
	c := newCore(t, "", "", "")
	for i := range 5 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32)
		if _, _, err := c.BanPrefix(p, time.Duration(i+1)*time.Hour, "", t0); err != nil {
			t.Fatal(err)
		}
	}
	c.Unban(netip.MustParseAddr("192.0.2.4"))
	// A read changes nothing, so times may go back; a writer prunes passed
	// seconds without changing the count of those still to come.
	cases := []struct {
		at   time.Duration
		want int
	}{{4 * time.Hour, 0}, {0, 4}, {90 * time.Minute, 3}, {4*time.Hour - time.Second, 1}, {4 * time.Hour, 0}, {0, 4}}
	for _, tc := range cases {
		if got := c.Stats(t0.Add(tc.at)).ActiveBans; got != tc.want {
			t.Errorf("ActiveBans(+%v) = %d, want %d", tc.at, got, tc.want)
		}
	}
	c.Apply(Ban{Key: netip.MustParsePrefix("198.51.100.1/32"), Until: t0.Add(5 * time.Hour)}, t0.Add(90*time.Minute))
	if got := c.Stats(t0.Add(90 * time.Minute)).ActiveBans; got != 4 {
		t.Errorf("after a prune at +90m: ActiveBans = %d, want 4", got)
	}
}

func TestApplyKeepsRecord(t *testing.T) {
	c := newCore(t, "", "", "")
	b := Ban{Key: netip.MustParsePrefix("192.0.2.1/32"), Until: t0.Add(time.Hour), Count: 4, Failures: 7}
	c.Apply(b, t0)
	got := c.Bans(t0)
	if len(got) != 1 || got[0].Count != 4 || got[0].Failures != 7 || !got[0].Until.Equal(b.Until) {
		t.Fatalf("Bans = %+v", got)
	}
	if len(c.Bans(t0.Add(time.Hour))) != 0 {
		t.Fatal("expired ban listed as active")
	}
	if len(c.Records(t0.Add(time.Hour))) != 1 {
		t.Fatal("expired record dropped; it is kept for escalation")
	}
}

// TestListsGolden compares the tables with a linear scan on random input.
func TestListsGolden(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 42))
	randPrefix := func() netip.Prefix {
		if r.IntN(2) == 0 {
			var b [4]byte
			for i := range b {
				b[i] = byte(r.IntN(4)) // a small space, so prefixes overlap
			}
			return netip.PrefixFrom(netip.AddrFrom4(b), r.IntN(33)).Masked()
		}
		var b [16]byte
		for i := range 4 {
			b[i] = byte(r.IntN(4))
		}
		return netip.PrefixFrom(netip.AddrFrom16(b), r.IntN(129)).Masked()
	}
	var allow, deny []netip.Prefix
	for range 300 {
		allow = append(allow, randPrefix())
		deny = append(deny, randPrefix())
	}
	l := NewLists(allow, deny, nil)
	slow := func(set []netip.Prefix, a netip.Addr) bool {
		for _, p := range set {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	for range 20000 {
		a := randPrefix().Addr()
		if got, want := l.Denied(a), slow(deny, a); got != want {
			t.Fatalf("Denied(%s) = %v, want %v", a, got, want)
		}
		if got, want := l.NotAllowed(a), !slow(allow, a); got != want {
			t.Fatalf("NotAllowed(%s) = %v, want %v", a, got, want)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"10.0.0.1", "10.0.0.1/32", ""},
		{"10.1.2.3/8", "10.0.0.0/8", ""},
		{"2001:db8::1", "2001:db8::1/128", ""},
		{"::ffff:10.0.0.1", "10.0.0.1/32", ""},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8", ""},
		{"10.0.0.0/33", "", `"10.0.0.0/33" is not an IP or CIDR`},
		{"fe80::1%eth0", "", `"fe80::1%eth0" is not an IP or CIDR`},
		{"example.com", "", `"example.com" is not an IP or CIDR`},
		{"::ffff:0:0/90", "", `"::ffff:0:0/90" is not an IP or CIDR`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePrefix(tc.in)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("ParsePrefix(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestReadList(t *testing.T) {
	in := "# office\n10.0.0.0/8   # vpn\n\n  192.0.2.1\n2001:db8::/32\n"
	got, err := ReadList("allow.txt", strings.NewReader(in))
	if err != nil || fmt.Sprint(got) != "[10.0.0.0/8 192.0.2.1/32 2001:db8::/32]" {
		t.Fatalf("ReadList = %v, %v", got, err)
	}
	_, err = ReadList("allow.txt", strings.NewReader("10.0.0.0/8\n\n10.0.0.300\n"))
	if err == nil || err.Error() != `allow.txt:3: "10.0.0.300" is not an IP or CIDR` {
		t.Fatalf("err = %v", err)
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	c := benchCore(t, 10_000, 10_000)
	allowed, banned := netip.MustParseAddr("10.255.0.1"), netip.MustParseAddr("100.64.0.5")
	for _, a := range []netip.Addr{allowed, banned} {
		if n := testing.AllocsPerRun(1000, func() { c.Decide(a, t0) }); n != 0 {
			t.Errorf("Decide(%s): %v allocs, want 0", a, n)
		}
	}
	if v := c.Decide(banned, t0); v.Reason != Banned {
		t.Fatalf("fixture: %s is %v, want banned", banned, v.Reason)
	}
}

// benchCore has deny prefixes in 20.0.0.0/6 and bans in 100.64.0.0/10.
func benchCore(t testing.TB, prefixes, bans int) *Core {
	r := rand.New(rand.NewPCG(1, 2))
	deny := make([]netip.Prefix, prefixes)
	for i := range deny {
		deny[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{20 + byte(r.IntN(4)), byte(r.IntN(256)), byte(r.IntN(256)), 0}), 16+r.IntN(9)).Masked()
	}
	c := New(defaultPolicy(), NewLists(nil, deny, nil), bans+10, 100)
	for i := range bans {
		a := netip.AddrFrom4([4]byte{100, 64 + byte(i>>16&63), byte(i >> 8), byte(i)})
		c.Apply(Ban{Key: netip.PrefixFrom(a, 32), Until: t0.Add(time.Hour), Count: 1}, t0)
	}
	return c
}
