package decide

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestSprayCost is the attacker's view of the ban table at a small cap (and,
// with DOORMAN_SPRAY=1000000, at the default): a spray of /64s from one /48
// costs one record; a spray from distinct /48s fills the table, yet the
// manual bans made before it hold.
func TestSprayCost(t *testing.T) {
	n := 20_000
	if v, err := strconv.Atoi(os.Getenv("DOORMAN_SPRAY")); err == nil && v > 0 {
		n = v
	}
	p := defaultPolicy()
	p.MaxFailures, p.RangeThreshold, p.IPv4RangePrefix, p.IPv6RangePrefix = 1, 4, 24, 48
	for _, tc := range []struct {
		name string
		addr func(i int) netip.Addr
		want func(records int) bool
	}{
		{"one /48", func(i int) netip.Addr {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, byte(i >> 8), byte(i), 15: 1})
		}, func(r int) bool { return r == 2 }}, // the range and the manual ban
		{"distinct /48s", func(i int) netip.Addr {
			return netip.AddrFrom16([16]byte{0x20, 0x01, byte(i >> 16), byte(i >> 8), byte(i), 15: 1})
		}, func(r int) bool { return r == n }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			c := New(p, nil, n, n)
			manual := netip.MustParsePrefix("203.0.113.0/24")
			if _, _, err := c.BanPrefix(manual, 168*time.Hour, "", t0); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for i := range 2 * n {
				if r := c.Fail(tc.addr(i), t0.Add(time.Duration(i)*time.Microsecond)); r.Refused {
					t.Fatalf("failure %d refused", i)
				}
			}
			took := time.Since(start)
			runtime.GC()
			runtime.ReadMemStats(&after)
			st := c.Stats(t0)
			t.Logf("%d failures from %s at MAX_BANS=%d: %d records, %d active, heap %.1f MiB (%.0f B/record), %v",
				2*n, tc.name, n, st.BanRecords, st.ActiveBans, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20),
				float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(max(st.BanRecords, 1)), took.Round(time.Millisecond))
			if !tc.want(st.BanRecords) {
				t.Errorf("%d records", st.BanRecords)
			}
			if v := c.Decide(netip.MustParseAddr("203.0.113.9"), t0.Add(time.Hour)); v.Reason != Banned {
				t.Errorf("the manual ban did not hold: %+v", v)
			}
			runtime.KeepAlive(c)
		})
	}
	_ = fmt.Sprint
}
