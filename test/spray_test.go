package test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

// TestSpray sends a spray of failures through the webhook, as an attacker
// rotating addresses would: /64s of one /48, then one /64 in each of many
// /48s into a small table. Every call is answered 200, the table stays within
// its cap, the one /48 costs one record, and a manual ban made before holds.
func TestSpray(t *testing.T) {
	const n = 3000
	d := startDoorman(t, map[string]string{
		"DOORMAN_MAX_FAILURES":    "1",
		"DOORMAN_RANGE_THRESHOLD": "4",
		"DOORMAN_MAX_BANS":        "500",
		"DOORMAN_LOG_LEVEL":       "warn",
	})
	if code, b := d.API(t, "POST", "/v1/bans", map[string]string{"ip": "192.0.2.0/24", "duration": "168h"}); code != 201 {
		t.Fatalf("manual ban: %d %s", code, b)
	}
	spray := func(addr func(i int) string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < n; i += 8 {
					if code, b := d.API(t, "POST", "/v1/failures", map[string]string{"ip": addr(i)}); code != 200 {
						select {
						case errs <- fmt.Sprintf("%s: %d %s", addr(i), code, b):
						default:
						}
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Fatal(e)
		}
	}
	bans := func() map[string]string {
		t.Helper()
		code, b := d.API(t, "GET", "/v1/bans", nil)
		var out struct {
			Bans []struct{ Key, Reason string }
		}
		if code != 200 || json.Unmarshal(b, &out) != nil {
			t.Fatalf("GET /v1/bans: %d %s", code, b)
		}
		m := map[string]string{}
		for _, x := range out.Bans {
			m[x.Key] = x.Reason
		}
		return m
	}
	dc := newDecider(t, d.DecideAddr)

	spray(func(i int) string { return fmt.Sprintf("2001:db8:1:%x::1", i) })
	got := bans()
	if got["2001:db8:1::/48"] != "range" || got["192.0.2.0/24"] != "manual" || len(got) != 2 {
		t.Fatalf("after %d /64s of one /48: %v, want the /48 range ban and the manual ban only", n, got)
	}
	if r := dc.reason(t, "2001:db8:1:ffff::9"); r != "banned" {
		t.Fatalf("an address of the sprayed /48: %s, want banned", r)
	}

	spray(func(i int) string {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x10 + byte(i>>8), byte(i), 15: 1})
		return a.String()
	})
	got = bans()
	if len(got) > 500 || got["192.0.2.0/24"] != "manual" {
		t.Fatalf("after %d distinct /48s: %d bans (cap 500), manual ban %q", n, len(got), got["192.0.2.0/24"])
	}
	if r := dc.reason(t, "192.0.2.77"); r != "banned" {
		t.Fatalf("the manual ban after the spray: %s, want banned", r)
	}
	m := scrapeMetrics(t, d)
	if ev := m[`doorman_evictions_total{table="bans",kind="active"}`]; ev < n-500 {
		t.Errorf("active evictions %v, want at least %d", ev, n-500)
	}
	t.Logf("2×%d failures answered 200; %d bans held at the end; %v active evictions",
		n, len(got), m[`doorman_evictions_total{table="bans",kind="active"}`])
}
