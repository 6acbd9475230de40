package decide

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNormalizeUsername(t *testing.T) {
	tests := []struct {
		name, in, want string
		err            error
	}{
		{"plain", "admin", "admin", nil},
		{"capitalised", "Admin", "admin", nil},
		{"upper with trailing space", "ADMIN ", "admin", nil},
		{"surrounding tabs and newlines", "\t admin\r\n", "admin", nil},
		{"fullwidth", "ａｄｍｉｎ", "admin", nil},
		{"fullwidth upper", "ＡＤＭＩＮ", "admin", nil},
		{"ideographic spaces trimmed", "\u3000admin\u3000", "admin", nil},
		{"no-break space trimmed", "\u00a0admin\u00a0", "admin", nil},
		{"inner space kept", "Jane Doe", "jane doe", nil},
		{"kelvin sign", "\u212Aelvin", "kelvin", nil},
		{"sharp s folds", "Straße", "strasse", nil},
		{"ligature", "ﬁnance", "finance", nil},
		{"composed and decomposed e-acute", "re\u0301my", "rémy", nil},
		{"greek final sigma", "ΟΔΥΣΣΕΥΣ", "οδυσσευσ", nil},
		{"email", "Admin@Example.COM", "admin@example.com", nil},
		{"cherokee folds to upper case", "ꮪᏚ", "ᏚᏚ", nil},
		{"cherokee small letter ye", "\u13F8", "\u13F0", nil},
		{"empty", "", "", nil},
		{"only space", " \t\u3000 ", "", nil},
		{"256 bytes", strings.Repeat("a", 256), strings.Repeat("a", 256), nil},
		{"257 bytes", strings.Repeat("a", 257), "", ErrUsernameTooLong},
		{"256 bytes with surrounding space is still too long before trimming", " " + strings.Repeat("a", 256), "", ErrUsernameTooLong},
		{"grows past 256 under NFKC", strings.Repeat("\uFDFA", 20), "", ErrUsernameTooLong},
		{"invalid UTF-8", "adm\xffin", "", ErrUsernameUTF8},
		{"inner newline", "bob\ndoorman: unlock admin", "", ErrUsernameControl},
		{"inner carriage return", "bob\radmin", "", ErrUsernameControl},
		{"inner tab", "ad\tmin", "", ErrUsernameControl},
		{"NUL", "admin\x00", "", ErrUsernameControl},
		{"ANSI escape", "\x1b[2Jadmin", "", ErrUsernameControl},
		{"OSC 8 link", "\x1b]8;;http://evil\x07admin\x1b]8;;\x07", "", ErrUsernameControl},
		{"DEL", "adm\x7fin", "", ErrUsernameControl},
		{"C1 CSI", "adm\u009bin", "", ErrUsernameControl},
		{"right-to-left override", "adm\u202enimda", "", ErrUsernameControl},
		{"left-to-right isolate", "\u2066admin", "", ErrUsernameControl},
		{"zero width space", "ad\u200bmin", "", ErrUsernameControl},
		{"byte order mark", "\ufeffadmin", "", ErrUsernameControl},
		{"line separator inside", "bob\u2028admin", "", ErrUsernameControl},
		{"surrounding line separator trimmed", "\u2028admin\u2029", "admin", nil},
		{"next line trimmed", "admin\u0085", "admin", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NormalizeUsername(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("NormalizeUsername(%q) error = %v, want %v", tc.in, err, tc.err)
			}
			if got != tc.want {
				t.Errorf("NormalizeUsername(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if again, _ := NormalizeUsername(got); err == nil && again != got {
				t.Errorf("not idempotent: %q -> %q -> %q", tc.in, got, again)
			}
		})
	}
}

var a0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func accountPolicy() AccountPolicy {
	return AccountPolicy{MaxFailures: 3, FindTime: 10 * time.Minute, LockTime: 15 * time.Minute, LockFactor: 2,
		MaxLockTime: time.Hour, DeviceMaxFailures: 2}
}

// fails records n failures of user one second apart from at and returns the
// last result.
func fails(a *Accounts, user string, dev Device, n int, at time.Time) AccountResult {
	var r AccountResult
	for i := range n {
		r = a.Fail(user, dev, at.Add(time.Duration(i)*time.Second))
	}
	return r
}

func TestAccountWindow(t *testing.T) {
	tests := []struct {
		name   string
		gaps   []time.Duration // between consecutive failures
		locked bool
	}{
		{"three at once lock", []time.Duration{0, 0}, true},
		{"three within the window lock", []time.Duration{5 * time.Minute, 4*time.Minute + 59*time.Second}, true},
		{"the first has left the window", []time.Duration{5 * time.Minute, 5 * time.Minute}, false},
		{"six minutes apart never lock", []time.Duration{6 * time.Minute, 6 * time.Minute, 6 * time.Minute, 6 * time.Minute}, false},
		{"two, then two within the window lock", []time.Duration{11 * time.Minute, 9 * time.Minute, time.Second}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAccounts(accountPolicy(), 100)
			at := a0
			r := a.Fail("admin", Device{}, at)
			for _, g := range tc.gaps {
				at = at.Add(g)
				r = a.Fail("admin", Device{}, at)
				if r.Locked && !r.NewLock {
					t.Fatalf("locked before the last failure: %+v", r)
				}
			}
			if r.Locked != tc.locked || r.NewLock != tc.locked {
				t.Fatalf("last failure: locked %v new %v, want %v (%+v)", r.Locked, r.NewLock, tc.locked, r)
			}
			if got := a.Check("admin", Device{}, at); got.Allow == tc.locked {
				t.Errorf("Check after: %+v, want allow %v", got, !tc.locked)
			}
			if other := a.Check("root", Device{}, at); !other.Allow {
				t.Errorf("another account refused: %+v", other)
			}
		})
	}
}

func TestAccountLock(t *testing.T) {
	a := NewAccounts(accountPolicy(), 100)
	r := fails(a, "admin", Device{}, 3, a0)
	end := a0.Add(2*time.Second + 15*time.Minute)
	if !r.NewLock || r.Count != 1 || r.Failures != 3 || !r.Until.Equal(end) {
		t.Fatalf("third failure: %+v, want a first lock until %v", r, end)
	}
	if got := a.Check("admin", Device{}, end.Add(-time.Nanosecond)); got.Allow || got.Reason != AccountLocked || !got.Until.Equal(end) {
		t.Errorf("just before the end: %+v", got)
	}
	if got := a.Check("admin", Device{}, end); !got.Allow {
		t.Errorf("at the end: %+v, want allow", got)
	}
	// Failures during the lock are counted but do not extend it.
	r = a.Fail("admin", Device{}, a0.Add(time.Minute))
	if !r.Locked || r.NewLock || r.Failures != 3 || !r.Until.Equal(end) {
		t.Errorf("failure while locked: %+v", r)
	}
	if locks := a.Locks(a0.Add(time.Minute)); len(locks) != 1 || locks[0].Username != "admin" || !locks[0].Until.Equal(end) {
		t.Errorf("Locks = %+v", locks)
	}
	if s := a.Stats(a0.Add(time.Minute)); s != (AccountStats{Tracked: 1, Locked: 1}) {
		t.Errorf("Stats while locked = %+v", s)
	}
	// When the lock ends, the failures before its end are forgotten: one
	// more failure is one, not four.
	r = a.Fail("admin", Device{}, end.Add(time.Second))
	if r.Locked || r.Failures != 1 {
		t.Errorf("first failure after the lock: %+v, want 1 failure, not locked", r)
	}
	if s := a.Stats(end.Add(time.Second)); s != (AccountStats{Tracked: 1}) {
		t.Errorf("Stats after = %+v", s)
	}
}

func TestAccountEscalation(t *testing.T) {
	a := NewAccounts(accountPolicy(), 100)
	at := a0
	for i, want := range []time.Duration{15 * time.Minute, 30 * time.Minute, time.Hour, time.Hour} {
		r := fails(a, "admin", Device{}, 3, at)
		last := at.Add(2 * time.Second)
		if !r.NewLock || r.Count != i+1 || r.Until.Sub(last) != want {
			t.Fatalf("lock %d: count %d for %v, want %d for %v", i+1, r.Count, r.Until.Sub(last), i+1, want)
		}
		at = r.Until.Add(time.Minute) // next attack a minute after the lock ends
	}
	// The count is remembered for MaxLockTime after the lock ends, then forgotten.
	l, _, _ := a.Status("admin", at)
	at = l.Until.Add(time.Hour + time.Second)
	if r := fails(a, "admin", Device{}, 3, at); r.Count != 1 || r.Until.Sub(at.Add(2*time.Second)) != 15*time.Minute {
		t.Errorf("after the count is forgotten: count %d for %v, want 1 for 15m", r.Count, r.Until.Sub(at))
	}
}

func TestAccountUnlockAndApply(t *testing.T) {
	a := NewAccounts(accountPolicy(), 100)
	fails(a, "admin", Device{}, 3, a0)
	l, ok := a.Unlock("admin", a0.Add(time.Minute))
	if !ok || l.Count != 1 || l.Failures != 3 {
		t.Fatalf("Unlock = %+v, %v", l, ok)
	}
	if got := a.Check("admin", Device{}, a0.Add(time.Minute)); !got.Allow {
		t.Errorf("still refused after Unlock: %+v", got)
	}
	if _, ok := a.Unlock("admin", a0); ok {
		t.Error("second Unlock found the account")
	}
	if _, ok := a.Unlock("nobody", a0); ok {
		t.Error("Unlock of an unknown account found it")
	}
	// Unlock forgets the count: the next lock is a first one.
	if r := fails(a, "admin", Device{}, 3, a0.Add(2*time.Minute)); r.Count != 1 {
		t.Errorf("lock after Unlock: count %d, want 1", r.Count)
	}

	// Apply: a lock from the store or another instance, as it is.
	b := NewAccounts(accountPolicy(), 100)
	b.Apply(Lock{Username: "root", Until: a0.Add(time.Hour), Count: 3}, a0)
	b.Apply(Lock{Username: "old", Until: a0.Add(-2 * time.Hour), Count: 5}, a0) // forgotten: ended over MaxLockTime ago
	b.Apply(Lock{Username: "ended", Until: a0.Add(-time.Minute), Count: 2}, a0)
	if got := b.Check("root", Device{}, a0); got.Allow || !got.Until.Equal(a0.Add(time.Hour)) {
		t.Errorf("applied lock: %+v", got)
	}
	if s := b.Stats(a0); s.Tracked != 2 || s.Locked != 1 {
		t.Errorf("Stats = %+v, want 2 tracked (root, ended), 1 locked", s)
	}
	// The ended lock's count escalates the next one.
	if r := fails(b, "ended", Device{}, 3, a0); r.Count != 3 || r.Until.Sub(a0.Add(2*time.Second)) != time.Hour {
		t.Errorf("lock after an applied ended one: %+v, want count 3 for 1h", r)
	}
}

func TestAccountsOff(t *testing.T) {
	p := accountPolicy()
	p.MaxFailures = 0
	a := NewAccounts(p, 100)
	for range 10 {
		if r := a.Fail("admin", Device{}, a0); r.Locked || r.Failures != 0 {
			t.Fatalf("accounts off: %+v", r)
		}
	}
	if got := a.Check("admin", Device{}, a0); !got.Allow {
		t.Errorf("accounts off: %+v", got)
	}
	if s := a.Stats(a0); s != (AccountStats{}) {
		t.Errorf("accounts off: %+v", s)
	}
}

func TestAccountEviction(t *testing.T) {
	a := NewAccounts(accountPolicy(), 3)
	evicted := func(r AccountResult) []string {
		var out []string
		for _, e := range r.Evicted {
			out = append(out, fmt.Sprintf("%s:%s:%v", e.Table, e.Username, e.Locked))
		}
		return out
	}
	at := a0
	step := func() time.Time { at = at.Add(time.Second); return at }
	for _, u := range []string{"a", "b", "c"} {
		if r := a.Fail(u, Device{}, step()); len(r.Evicted) != 0 {
			t.Fatalf("%s evicted %v from a table not full", u, evicted(r))
		}
	}
	a.Fail("a", Device{}, step()) // a is now the most recent; b the least
	if got := evicted(a.Fail("d", Device{}, step())); !slices.Equal(got, []string{"accounts:b:false"}) {
		t.Fatalf("full table, new account: evicted %v, want b, the least recently failing", got)
	}
	// Lock c and d: they are passed over while an unlocked account remains.
	fails(a, "c", Device{}, 3, step())
	fails(a, "d", Device{}, 3, step())
	at = at.Add(10 * time.Second)
	if got := evicted(a.Fail("e", Device{}, step())); !slices.Equal(got, []string{"accounts:a:false"}) {
		t.Fatalf("evicted %v, want a (c and d are locked)", got)
	}
	if got := evicted(a.Fail("f", Device{}, step())); !slices.Equal(got, []string{"accounts:e:false"}) {
		t.Fatalf("evicted %v, want e (c and d are locked)", got)
	}
	// Only locks left besides the newest: f is evicted, then the lock that
	// ends soonest (c's).
	fails(a, "f", Device{}, 3, step())
	if got := evicted(a.Fail("g", Device{}, step())); !slices.Equal(got, []string{"accounts:c:true"}) {
		t.Fatalf("all locked: evicted %v, want c, whose lock ends first", got)
	}
	if got := a.Check("d", Device{}, at); got.Allow {
		t.Error("d's lock was lost")
	}
	// Locks that have ended rejoin the unlocked accounts as the most recent,
	// in the order they ended: after g, d then f.
	at = a.Locks(at)[1].Until.Add(time.Minute)
	for _, want := range []string{"g", "d", "f"} {
		if got := evicted(a.Fail("new-"+want, Device{}, step())); !slices.Equal(got, []string{"accounts:" + want + ":false"}) {
			t.Fatalf("after the locks ended: evicted %v, want %s", got, want)
		}
	}
	if s := a.Stats(at); s.Tracked != 3 {
		t.Errorf("Tracked = %d, want the cap 3", s.Tracked)
	}
}

// TestAccountTableModel compares the lock table with a slow, obvious model on
// random failures, unlocks and checks over a small key space and a small cap.
func TestAccountTableModel(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 42))
	const max, limit = 8, 2
	window, lock, maxLock := int64(100), int64(400), int64(2000)
	tab := newLockTable[string](max, limit, window, lock, maxLock, 2)
	m := newModel(max, limit, window, lock, maxLock)
	now := int64(1000)
	var locks, evictions, lockedEvictions int
	for step := range 20000 {
		now += 1 + r.Int64N(20)
		key := fmt.Sprintf("k%d", r.IntN(14))
		switch op := r.IntN(10); {
		case op < 7:
			got, gev := tab.fail(key, now)
			want, wev := m.fail(key, now, first(keys(gev)))
			if got != want || !slices.Equal(keys(gev), wev) {
				t.Fatalf("step %d fail(%s, %d) = %+v evicted %v, model %+v evicted %v", step, key, now, got, keys(gev), want, wev)
			}
			if got.newLock {
				locks++
			}
			for _, e := range gev {
				evictions++
				if e.locked {
					lockedEvictions++
				}
			}
		case op < 8 && r.IntN(2) == 0:
			until, count := now+r.Int64N(2*maxLock)-maxLock-window, uint32(1+r.IntN(3))
			gev := tab.apply(key, until, count, now)
			if wev := m.apply(key, until, count, now, first(keys(gev))); !slices.Equal(keys(gev), wev) {
				t.Fatalf("step %d apply(%s, %d, %d) evicted %v, model %v", step, key, until, count, keys(gev), wev)
			}
		case op < 8:
			_, gok := tab.remove(key)
			if wok := m.remove(key); gok != wok {
				t.Fatalf("step %d remove(%s) = %v, model %v", step, key, gok, wok)
			}
		default:
			f, locked, until, count, found := tab.status(key, now)
			e, ok := m.entries[key]
			if found != ok {
				t.Fatalf("step %d status(%s) found %v, model %v", step, key, found, ok)
			}
			if ok {
				wf, wl, wc := m.status(e, now)
				if f != wf || locked != wl || count != wc || until != e.until {
					t.Fatalf("step %d status(%s) = %d %v %d %d, model %d %v %d %d", step, key, f, locked, until, count, wf, wl, e.until, wc)
				}
			}
		}
		if len(tab.index) != len(m.entries) {
			t.Fatalf("step %d: %d entries, model %d", step, len(tab.index), len(m.entries))
		}
		if got, want := tab.lockedCount(now), m.locked(now); got != want {
			t.Fatalf("step %d: lockedCount %d, model %d", step, got, want)
		}
	}
	// The run must have reached every rule it checks.
	if locks < 100 || evictions < 100 || lockedEvictions < 10 {
		t.Errorf("%d locks, %d evictions of which %d locked: too few to compare the rules", locks, evictions, lockedEvictions)
	}
	t.Logf("%d locks, %d evictions of which %d locked", locks, evictions, lockedEvictions)
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func keys[K comparable](ev []evicted[K]) []K {
	var out []K
	for _, e := range ev {
		out = append(out, e.key)
	}
	return out
}

// model is the lock table's rules written plainly: a map and linear scans.
type model struct {
	max, limit            int
	window, lock, maxLock int64
	entries               map[string]*modelEntry
	seq                   int
}

type modelEntry struct {
	times    []int64
	until    int64
	count    uint32
	inHeap   bool // locked and not yet released
	activity int  // order among entries not locked
}

func newModel(max, limit int, window, lock, maxLock int64) *model {
	return &model{max: max, limit: limit, window: window, lock: lock, maxLock: maxLock, entries: map[string]*modelEntry{}}
}

func (m *model) touch(e *modelEntry) { m.seq++; e.activity = m.seq }

// release: locks ended at now rejoin, in the order they ended.
func (m *model) release(now int64) {
	var ended []*modelEntry
	for _, e := range m.entries {
		if e.inHeap && e.until <= now {
			ended = append(ended, e)
		}
	}
	slices.SortFunc(ended, func(a, b *modelEntry) int { return int(a.until - b.until) })
	for i, e := range ended {
		e.inHeap = false
		if i > 0 && e.until == ended[i-1].until {
			e.activity = m.seq // a tie with the previous one
			continue
		}
		m.touch(e)
	}
}

func (m *model) low(e *modelEntry, now int64) int64 {
	low := now - m.window
	if e.until > low && e.until <= now {
		low = e.until - 1 // failures during the lock are forgotten, those from its end on count
	}
	return low
}

// entry returns key's entry, making room for a new one. Entries whose locks
// ended at the same instant are released with equal activity, and locks
// ending at the same instant are equal too: the table may evict any one of
// such a tie, and hint (the table's choice) settles it.
func (m *model) entry(key, hint string) (*modelEntry, []string) {
	var ev []string
	e, ok := m.entries[key]
	if !ok {
		if len(m.entries) >= m.max {
			var best []string
			var bestV int64
			consider := func(k string, v int64) {
				switch {
				case best == nil || v < bestV:
					best, bestV = []string{k}, v
				case v == bestV:
					best = append(best, k)
				}
			}
			for k, x := range m.entries { // least recent unlocked
				if !x.inHeap {
					consider(k, int64(x.activity))
				}
			}
			if best == nil { // all locked: the soonest to end
				for k, x := range m.entries {
					consider(k, x.until)
				}
			}
			victim := best[0]
			if slices.Contains(best, hint) {
				victim = hint
			} else {
				slices.Sort(best)
				victim = best[0] // a mismatch follows; name a fixed one
			}
			delete(m.entries, victim)
			ev = append(ev, victim)
		}
		e = &modelEntry{}
		m.entries[key] = e
		m.touch(e)
	}
	return e, ev
}

func (m *model) apply(key string, until int64, count uint32, now int64, hint string) []string {
	m.release(now)
	if until <= now && now-until > m.maxLock {
		return nil
	}
	e, ev := m.entry(key, hint)
	e.until, e.count = until, count
	if until > now {
		e.inHeap = true
	} else if e.inHeap {
		e.inHeap = false
		m.touch(e)
	}
	return ev
}

func (m *model) fail(key string, now int64, hint string) (failure, []string) {
	m.release(now)
	e, ev := m.entry(key, hint)
	low := m.low(e, now)
	var kept []int64
	for _, ts := range e.times {
		if ts > low {
			kept = append(kept, ts)
		}
	}
	if !e.inHeap && e.count > 0 && now-e.until > m.maxLock {
		e.count = 0
	}
	if len(kept) == m.limit {
		kept = kept[1:]
	}
	e.times = append(kept, now)
	f := failure{failures: len(e.times), count: e.count}
	if e.inHeap {
		f.locked, f.until = true, e.until
		return f, ev
	}
	m.touch(e)
	if len(e.times) < m.limit {
		return f, ev
	}
	e.count++
	d := m.lock << (e.count - 1)
	if d > m.maxLock || e.count > 20 {
		d = m.maxLock
	}
	e.until, e.inHeap = now+d, true
	f.locked, f.newLock, f.until, f.count = true, true, e.until, e.count
	return f, ev
}

func (m *model) remove(key string) bool {
	_, ok := m.entries[key]
	delete(m.entries, key)
	return ok
}

func (m *model) status(e *modelEntry, now int64) (int, bool, uint32) {
	n := 0
	for _, ts := range e.times {
		if ts > m.low(e, now) {
			n++
		}
	}
	locked := e.inHeap && e.until > now
	var count uint32
	if locked || e.until > 0 && now-e.until <= m.maxLock {
		count = e.count
	}
	return n, locked, count
}

func (m *model) locked(now int64) int {
	n := 0
	for _, e := range m.entries {
		if e.inHeap && e.until > now {
			n++
		}
	}
	return n
}
