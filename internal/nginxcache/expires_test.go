package nginxcache

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
)

func TestExpiryOf(t *testing.T) {
	ttl := 10 * time.Second
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	cases := []struct {
		name     string
		v        decide.Verdict
		now      time.Time
		ok       bool
		lastFrom int // Last - t0, seconds
	}{
		{"allow: up to the ttl, rounded down", decide.Verdict{Allow: true, Reason: decide.Allowed}, at(300), true, 9},
		{"allow on a second boundary", decide.Verdict{Allow: true, Reason: decide.Allowed}, at(0), true, 9},
		{"deny-listed: as allow", decide.Verdict{Reason: decide.Denylisted}, at(300), true, 9},
		{"not allow-listed: as allow", decide.Verdict{Reason: decide.NotAllowlisted}, at(999), true, 9},
		{"ban ending after the ttl", decide.Verdict{Reason: decide.Banned, Until: at(60000)}, at(300), true, 9},
		{"ban ending before the ttl: never past its end", decide.Verdict{Reason: decide.Banned, Until: at(5500)}, at(300), true, 4},
		{"ban ending within the second: not kept", decide.Verdict{Reason: decide.Banned, Until: at(800)}, at(300), false, 0},
		{"ban ending just past a second boundary", decide.Verdict{Reason: decide.Banned, Until: at(1200)}, at(300), true, 0},
		{"no client address: never", decide.Verdict{Reason: decide.NoClientIP}, at(300), false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := ExpiryOf(tc.v, tc.now, ttl)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if got := e.Last - t0.Unix(); got != int64(tc.lastFrom) {
				t.Errorf("Last = t0%+d s, want t0%+d s", got, tc.lastFrom)
			}
			if want := time.Unix(e.Last+1, 0).Add(Margin); !e.Gone.Equal(want) {
				t.Errorf("Gone = %v, want %v", e.Gone, want)
			}
		})
	}
}

// nginx serves a copy while its clock is before Last+1 s: that must be after
// now and never later than the ttl or the ban's end.
func TestExpiryOfBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 42))
	for range 100000 {
		now := t0.Add(time.Duration(r.Int64N(int64(time.Hour))))
		ttl := time.Second + time.Duration(r.Int64N(int64(time.Minute)))
		v := decide.Verdict{Allow: true, Reason: decide.Allowed}
		if r.IntN(2) == 0 {
			v = decide.Verdict{Reason: decide.Banned, Until: now.Add(time.Duration(r.Int64N(int64(2 * time.Minute))))}
		}
		e, ok := ExpiryOf(v, now, ttl)
		end := now.Add(ttl)
		if v.Reason == decide.Banned && v.Until.Before(end) {
			end = v.Until
		}
		stale := time.Unix(e.Last+1, 0)
		if ok && (!stale.After(now) || stale.After(end)) {
			t.Fatalf("ExpiryOf(%v, now %v, ttl %v): nginx would serve it until %v", v, now, ttl, stale)
		}
		if !ok && end.Sub(now) >= time.Second {
			t.Fatalf("ExpiryOf(%v, now %v, ttl %v) refused with %v left", v, now, ttl, end.Sub(now))
		}
	}
}
