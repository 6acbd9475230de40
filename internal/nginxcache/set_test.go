package nginxcache

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
)

var t0 = time.Unix(1_800_000_000, 0)

func key(s string) Key {
	if rest, ok := cutMapped(s); ok {
		return Key{addr: netip.MustParseAddr(rest).As16()}
	}
	return KeyOf(netip.MustParseAddr(s))
}

// cutMapped tells the ::ffff: spelling of an IPv4 address apart, which
// netip would unmap.
func cutMapped(s string) (string, bool) {
	if len(s) > 7 && s[:7] == "::ffff:" && netip.MustParseAddr(s[7:]).Is4() {
		return s[7:], true
	}
	return "", false
}

func keys(ks []Key) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.String()
	}
	slices.Sort(out)
	return out
}

func TestSetRemember(t *testing.T) {
	ttl := 10 * time.Second
	cases := []struct {
		name  string
		max   int
		steps func(t *testing.T, s *Set)
	}{
		{"a key is held until its until", 10, func(t *testing.T, s *Set) {
			want(t, s.Remember(key("192.0.2.1"), decide.Allowed, t0.Add(ttl), t0, s.Mark()), true, "Remember")
			wantKeys(t, s.In(netip.MustParsePrefix("192.0.2.1/32"), t0.Add(ttl-1), nil), "192.0.2.1")
			wantKeys(t, s.In(netip.MustParsePrefix("192.0.2.1/32"), t0.Add(ttl), nil))
			want(t, s.Len(t0.Add(ttl+time.Second)), 0, "Len after expiry")
		}},
		{"remembering again keeps the later until", 10, func(t *testing.T, s *Set) {
			s.Remember(key("192.0.2.1"), decide.Allowed, t0.Add(ttl), t0, s.Mark())
			s.Remember(key("192.0.2.1"), decide.Banned, t0.Add(time.Second), t0, s.Mark())
			wantKeys(t, s.In(netip.MustParsePrefix("192.0.2.0/24"), t0.Add(ttl-1), nil), "192.0.2.1")
			var got decide.Reason
			s.Range(t0, func(_ Key, r decide.Reason) { got = r })
			want(t, got, decide.Banned, "the verdict remembered")
			want(t, s.Len(t0), 1, "Len")
		}},
		{"until not after now is refused", 10, func(t *testing.T, s *Set) {
			want(t, s.Remember(key("192.0.2.1"), decide.Allowed, t0, t0, s.Mark()), false, "Remember")
			want(t, s.Len(t0), 0, "Len")
		}},
		{"until is capped at now plus life", 10, func(t *testing.T, s *Set) {
			s.Remember(key("192.0.2.1"), decide.Allowed, t0.Add(time.Hour), t0, s.Mark())
			wantKeys(t, s.In(netip.MustParsePrefix("192.0.2.1/32"), t0.Add(ttl+2*time.Second), nil))
		}},
		{"a change after the mark: not kept, but remembered", 10, func(t *testing.T, s *Set) {
			m := s.Mark()
			s.Change()
			want(t, s.Remember(key("192.0.2.1"), decide.Allowed, t0.Add(ttl), t0, m), false, "Remember")
			wantKeys(t, s.In(netip.MustParsePrefix("192.0.2.1/32"), t0, nil), "192.0.2.1")
		}},
		{"full: a new key is refused, a held one renewed", 2, func(t *testing.T, s *Set) {
			s.Remember(key("192.0.2.1"), decide.Allowed, t0.Add(ttl), t0, s.Mark())
			s.Remember(key("192.0.2.2"), decide.Allowed, t0.Add(ttl), t0, s.Mark())
			want(t, s.Remember(key("192.0.2.3"), decide.Allowed, t0.Add(ttl), t0, s.Mark()), false, "Remember a third")
			want(t, s.Remember(key("192.0.2.1"), decide.Allowed, t0.Add(ttl+1), t0.Add(1), s.Mark()), true, "Remember a held one")
			wantKeys(t, s.In(netip.MustParsePrefix("192.0.2.0/24"), t0, nil), "192.0.2.1", "192.0.2.2")
		}},
		{"full: an expired key makes room", 2, func(t *testing.T, s *Set) {
			s.Remember(key("192.0.2.1"), decide.Allowed, t0.Add(time.Second), t0, s.Mark())
			s.Remember(key("192.0.2.2"), decide.Allowed, t0.Add(ttl), t0, s.Mark())
			now := t0.Add(3 * time.Second)
			want(t, s.Remember(key("192.0.2.3"), decide.Allowed, now.Add(ttl), now, s.Mark()), true, "Remember a third")
			wantKeys(t, s.In(netip.MustParsePrefix("192.0.2.0/24"), now, nil), "192.0.2.2", "192.0.2.3")
		}},
		{"both spellings of an IPv4 address are two keys", 10, func(t *testing.T, s *Set) {
			s.Remember(key("192.0.2.1"), decide.Allowed, t0.Add(ttl), t0, s.Mark())
			s.Remember(key("::ffff:192.0.2.1"), decide.Allowed, t0.Add(ttl), t0, s.Mark())
			wantKeys(t, s.In(netip.MustParsePrefix("192.0.2.1/32"), t0, nil), "192.0.2.1", "::ffff:192.0.2.1")
			wantKeys(t, s.In(netip.MustParsePrefix("192.0.0.0/16"), t0, nil), "192.0.2.1", "::ffff:192.0.2.1")
			wantKeys(t, s.In(netip.MustParsePrefix("::ffff:0:0/96"), t0, nil))
		}},
		{"at most MaxPerSlash64 keys in one /64", 1000, func(t *testing.T, s *Set) {
			for i := range MaxPerSlash64 + 5 {
				a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i), 14: 1})
				ok := s.Remember(KeyOf(a), decide.Allowed, t0.Add(ttl), t0, s.Mark())
				want(t, ok, i < MaxPerSlash64, "Remember "+a.String())
			}
			want(t, len(s.In(netip.MustParsePrefix("2001:db8::/64"), t0, nil)), MaxPerSlash64, "keys in the /64")
			want(t, s.Remember(key("2001:db8:0:1::1"), decide.Allowed, t0.Add(ttl), t0, s.Mark()), true, "Remember in the next /64")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.steps(t, New(tc.max, ttl+Margin))
		})
	}
}

func TestSetIn(t *testing.T) {
	s := New(1000, 11*time.Second)
	for _, a := range []string{"192.0.2.1", "192.0.2.200", "::ffff:192.0.2.9", "192.0.3.1", "198.51.100.7", "10.1.2.3",
		"2001:db8::1", "2001:db8::2", "2001:db8::ffff:0:1", "2001:db8:0:1::1", "2001:db8:1::1", "::1.2.3.4"} {
		if !s.Remember(key(a), decide.Allowed, t0.Add(10*time.Second), t0, s.Mark()) {
			t.Fatalf("Remember(%s) refused", a)
		}
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"192.0.2.1/32", []string{"192.0.2.1"}},
		{"192.0.2.9/32", []string{"::ffff:192.0.2.9"}},
		{"192.0.2.2/32", nil},
		{"192.0.2.0/25", []string{"192.0.2.1", "::ffff:192.0.2.9"}},
		{"192.0.2.0/24", []string{"192.0.2.1", "192.0.2.200", "::ffff:192.0.2.9"}},
		{"192.0.2.77/23", []string{"192.0.2.1", "192.0.2.200", "192.0.3.1", "::ffff:192.0.2.9"}},
		{"192.0.0.0/8", []string{"192.0.2.1", "192.0.2.200", "192.0.3.1", "::ffff:192.0.2.9"}},
		{"0.0.0.0/0", []string{"10.1.2.3", "192.0.2.1", "192.0.2.200", "192.0.3.1", "198.51.100.7", "::ffff:192.0.2.9"}},
		{"2001:db8::1/128", []string{"2001:db8::1"}},
		{"2001:db8::/64", []string{"2001:db8::1", "2001:db8::2", "2001:db8::ffff:0:1"}},
		{"2001:db8::ffff:0:0/96", []string{"2001:db8::ffff:0:1"}},
		{"2001:db8::/63", []string{"2001:db8:0:1::1", "2001:db8::1", "2001:db8::2", "2001:db8::ffff:0:1"}},
		{"2001:db8::/32", []string{"2001:db8:0:1::1", "2001:db8:1::1", "2001:db8::1", "2001:db8::2", "2001:db8::ffff:0:1"}},
		{"::/0", []string{"2001:db8:0:1::1", "2001:db8:1::1", "2001:db8::1", "2001:db8::2", "2001:db8::ffff:0:1", "::1.2.3.4"}},
		{"::/96", []string{"::1.2.3.4"}},
	}
	for _, tc := range cases {
		t.Run(tc.prefix, func(t *testing.T) {
			wantKeys(t, s.In(netip.MustParsePrefix(tc.prefix), t0, nil), tc.want...)
		})
	}
}

// TestSetGolden compares the Set with a plain map scanned in full, over
// random keys, untils, renewals and prefixes, as the clock moves on.
func TestSetGolden(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 42))
	const limit, life = 1000, 11 * time.Second
	s := New(limit, life)
	ref := map[Key]int64{} // until, unix nanoseconds; entries past it are gone
	// Addresses from a few small ranges, so prefixes hit and keys repeat.
	addr := func() netip.Addr {
		switch r.IntN(4) {
		case 0:
			return netip.AddrFrom4([4]byte{192, 0, byte(r.IntN(4)), byte(r.IntN(256))})
		case 1:
			return netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		case 2:
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 7: byte(r.IntN(4)), 14: byte(r.IntN(8)), 15: byte(r.IntN(8))})
		}
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return netip.AddrFrom16(b)
	}
	live := func(now int64) int {
		n := 0
		for _, u := range ref {
			if u > now {
				n++
			}
		}
		return n
	}
	// The bound counts a key until the end of the second its until falls in.
	bound := func(now int64) int {
		n := 0
		for _, u := range ref {
			if (u+1e9-1)/1e9 > now/1e9 {
				n++
			}
		}
		return n
	}
	perSlash64 := func(k Key, now int64) int {
		n := 0
		for o, u := range ref {
			if u > now && !o.Addr().Is4() && bucketOf(o.Addr()) == bucketOf(k.Addr()) {
				n++
			}
		}
		return n
	}
	now := t0
	refused := 0 // refused though the map had room: expired keys of a /64 not yet freed
	for step := range 20000 {
		now = now.Add(time.Duration(r.IntN(5)) * time.Millisecond * 3)
		tn := now.UnixNano()
		for k, u := range ref { // gone for the bound too: forget (the map is scanned in full below)
			if (u+1e9-1)/1e9 <= tn/1e9 {
				delete(ref, k)
			}
		}
		a := addr()
		k := KeyOf(a)
		if a.Is4() && r.IntN(5) == 0 {
			k.is4 = false
		}
		until := now.Add(time.Duration(r.Int64N(int64(life + 2*time.Second))))
		u := min(until.UnixNano(), tn+int64(life))
		_, held := ref[k]
		held = held && ref[k] > tn
		// The Set may still hold expired keys the bound counts, until it frees
		// them (a few per call): it may refuse where the map would not, never
		// the reverse.
		got := s.Remember(k, decide.Allowed, until, now, s.Mark())
		if got && !(u > tn && (held || live(tn) < limit && (k.Addr().Is4() || perSlash64(k, tn) < MaxPerSlash64))) {
			t.Fatalf("step %d: Remember(%s) accepted, want refused", step, k)
		}
		if !got && u > tn && (held || bound(tn) < limit && (k.Addr().Is4() || perSlash64(k, tn) < MaxPerSlash64)) {
			refused++
		}
		if got {
			if held {
				ref[k] = max(ref[k], u)
			} else {
				ref[k] = u
			}
		}
		if step%97 == 0 {
			b := r.IntN(129)
			if a.Is4() {
				b = r.IntN(33)
			}
			p := netip.PrefixFrom(a, b).Masked()
			var want []string
			for k, u := range ref {
				if u > tn && p.Contains(k.Addr()) {
					want = append(want, k.String())
				}
			}
			slices.Sort(want)
			if got := keys(s.In(p, now, nil)); !slices.Equal(got, want) {
				t.Fatalf("step %d: In(%s) = %v, want %v", step, p, got, want)
			}
			if got, want := s.Len(now), live(tn); got < want || got > want+s.expiringIn(tn) {
				t.Fatalf("step %d: Len = %d, want %d (or more, by the keys expiring this second)", step, got, want)
			}
		}
	}
	t.Logf("held at the end: %d; refused though the map had room: %d", live(now.UnixNano()), refused)
	if refused > 200 {
		t.Errorf("refused %d verdicts the bound had room for, want at most 200 of 20000", refused)
	}
}

// expiringIn counts the keys expired at t that the wheel still holds for the
// current second: Len counts them.
func (s *Set) expiringIn(t int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for i := range s.ents {
		if e := &s.ents[i]; e.used && e.until <= t && !s.onExpired(int32(i)) {
			n++
		}
	}
	return n
}

func TestSetRememberAllocs(t *testing.T) {
	s := New(1<<12, 11*time.Second)
	r := rand.New(rand.NewPCG(1, 2))
	now := t0
	remember := func() {
		now = now.Add(time.Millisecond)
		a := netip.AddrFrom4([4]byte{10, byte(r.IntN(64)), byte(r.IntN(256)), byte(r.IntN(256))})
		s.Remember(KeyOf(a), decide.Allowed, now.Add(5*time.Second), now, s.Mark())
	}
	for range 200000 { // grow the tables to the working size
		remember()
	}
	if n := testing.AllocsPerRun(10000, remember); n != 0 {
		t.Errorf("Remember allocates %v times per call at steady size, want 0", n)
	}
}

func want[T comparable](t *testing.T, got, want T, what string) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func wantKeys(t *testing.T, got []Key, want ...string) {
	t.Helper()
	slices.Sort(want)
	if g := keys(got); !slices.Equal(g, want) {
		t.Errorf("keys %v, want %v", g, want)
	}
}
