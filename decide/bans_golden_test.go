package decide

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// banModel is the slow, obvious BanTable: unit records in a slice, range
// records in a map, lookup and eviction by linear scans.
type banModel struct {
	max    int
	units  []Ban
	ranges map[netip.Prefix]Ban
}

// candidates are the records the eviction rule may pick at now: among the
// expired records and the active automatic ones, those ending first (an
// expired record always ends before an active one). Ties may go either way.
func (m *banModel) candidates(now int64) []Ban {
	var all []Ban
	all = append(all, m.units...)
	for _, b := range m.ranges {
		all = append(all, b)
	}
	var out []Ban
	for _, b := range all {
		if b.Manual && b.Until.UnixNano() > now {
			continue
		}
		switch {
		case len(out) == 0 || b.Until.Before(out[0].Until):
			out = []Ban{b}
		case b.Until.Equal(out[0].Until):
			out = append(out, b)
		}
	}
	return out
}

func (m *banModel) has(key netip.Prefix) bool {
	_, ok := m.ranges[key]
	return ok || slices.ContainsFunc(m.units, func(u Ban) bool { return u.Key == key })
}

// put stores b when there is room; chosen is the record the table evicted,
// which must be one of the candidates. It reports whether b was stored.
func (m *banModel) put(b Ban, unit bool, now int64, evicted []Ban) (ok bool, bad string) {
	if !m.has(b.Key) && len(m.units)+len(m.ranges) >= m.max {
		c := m.candidates(now)
		if len(c) == 0 {
			if len(evicted) > 0 {
				return false, "evicted with no candidate"
			}
			return false, ""
		}
		if len(evicted) != 1 || !slices.ContainsFunc(c, func(x Ban) bool { return x.Key == evicted[0].Key && recordOf(x) == recordOf(evicted[0]) }) {
			return false, "evicted a record the rule does not pick"
		}
		m.remove(evicted[0].Key)
	} else if len(evicted) > 0 {
		return false, "evicted with room left"
	}
	if unit {
		if i := slices.IndexFunc(m.units, func(u Ban) bool { return u.Key == b.Key }); i >= 0 {
			m.units[i] = b
		} else {
			m.units = append(m.units, b)
		}
	} else {
		m.ranges[b.Key] = b
	}
	return true, ""
}

func (m *banModel) remove(key netip.Prefix) (Ban, bool) {
	if b, ok := m.ranges[key]; ok {
		delete(m.ranges, key)
		return b, true
	}
	i := slices.IndexFunc(m.units, func(u Ban) bool { return u.Key == key })
	if i < 0 {
		return Ban{}, false
	}
	b := m.units[i]
	m.units = slices.Delete(m.units, i, i+1)
	return b, true
}

// lookup: the active record of addr's own unit, else the longest active range
// that contains addr.
func (m *banModel) lookup(addr netip.Addr, unit netip.Prefix, now int64) (netip.Prefix, Ban, bool) {
	for _, u := range m.units {
		if u.Key == unit && u.Until.UnixNano() > now {
			return unit, u, true
		}
	}
	var best Ban
	found := false
	for k, b := range m.ranges {
		if k.Contains(addr) && b.Until.UnixNano() > now && (!found || k.Bits() > best.Key.Bits()) {
			best, found = b, true
		}
	}
	return best.Key, best, found
}

// TestBanTableLookupGolden drives BanTable and banModel with the same random
// puts and removes of unit and range records, IPv4 and IPv6, nested, active
// and expired, and compares every lookup (and what each write reports).
func TestBanTableLookupGolden(t *testing.T) {
	for _, tc := range []struct {
		name   string
		v4, v6 int // ban unit prefix lengths
		max    int
	}{
		{"default units, no eviction", 32, 64, 10000},
		{"default units, full table", 32, 64, 24},
		{"wide units, full table", 24, 56, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(42, 42))
			// Small address spaces, so units repeat and ranges nest and overlap.
			randAddr := func() netip.Addr {
				switch r.IntN(20) {
				case 0:
					return netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(256))}) // outside every range but /0s
				case 1:
					return netip.MustParseAddr("2001:db9::1")
				}
				if r.IntN(2) == 0 {
					return netip.AddrFrom4([4]byte{10, byte(r.IntN(2)), byte(r.IntN(4)), byte(r.IntN(16))})
				}
				var b [16]byte
				b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
				b[5] = byte(r.IntN(2))   // bits 32-47
				b[7] = byte(r.IntN(8))   // bits 48-63: the /64
				b[9] = byte(r.IntN(2))   // bits 64-79
				b[15] = byte(r.IntN(16)) // the host
				return netip.AddrFrom16(b)
			}
			unitOf := func(a netip.Addr) netip.Prefix {
				if a.Is4() {
					return netip.PrefixFrom(a, tc.v4).Masked()
				}
				return netip.PrefixFrom(a, tc.v6).Masked()
			}
			// A range never has a unit's shape: Core files a key of that
			// shape as a unit (isUnit), and the two halves share the notes.
			randRange := func() netip.Prefix {
				for {
					a := randAddr()
					bits := 0
					switch {
					case r.IntN(10) == 0:
						bits = r.IntN(a.BitLen() + 1) // now and then a /0 or another short one
					case a.Is4():
						bits = 8 + r.IntN(25)
					default:
						bits = 32 + r.IntN(97)
					}
					if p := netip.PrefixFrom(a, bits).Masked(); !isUnit(p, tc.v4, tc.v6) {
						return p
					}
				}
			}
			const base = int64(1_000_000) * 1e9
			// Whole seconds around base, so a record often ends exactly at a
			// query's now (and is then expired).
			randTime := func() int64 { return base + int64(r.IntN(200)-100)*1e9 }
			randBan := func(key netip.Prefix, unit bool) Ban {
				b := Ban{Key: key, Until: time.Unix(0, randTime()).UTC(), Count: 1 + r.IntN(5)}
				if unit {
					b.Failures = 1 + r.IntN(10)
				} else {
					b.Manual, b.Note = true, "note "+key.String()
				}
				return b
			}

			table, model := NewBanTable(tc.max), &banModel{max: tc.max, ranges: map[netip.Prefix]Ban{}}
			var hits, unitHits, misses, evictions, refusals int
			query := func(step int) {
				t.Helper()
				a := randAddr()
				unit := unitOf(a)
				now := randTime()
				gotKey, gotRec, gotOK := table.lookup(a, unit, now)
				wantKey, wantBan, wantOK := model.lookup(a, unit, now)
				if gotOK != wantOK || gotKey != wantKey || (wantOK && gotRec != recordOf(wantBan)) {
					t.Fatalf("step %d: lookup(%s, %s, base%+ds) = %s %+v %v, want %s %+v %v",
						step, a, unit, (now-base)/1e9, gotKey, gotRec, gotOK, wantKey, recordOf(wantBan), wantOK)
				}
				switch {
				case !wantOK:
					misses++
				case wantKey == unit:
					unitHits++
				default:
					hits++
				}
			}
			for step := range 30000 {
				switch op := r.IntN(20); {
				case op < 9: // a unit ban (op < 6) or a range ban, new or renewed
					unit := op < 6
					var b Ban
					if unit {
						b = randBan(unitOf(randAddr()), true)
					} else {
						b = randBan(randRange(), false)
					}
					now := randTime()
					ev, err := table.put(b, unit, time.Unix(0, now))
					ok, bad := model.put(b, unit, now, ev)
					if bad != "" || (err == nil) != ok {
						t.Fatalf("step %d: put(%s) evicted %v err %v: %s (model stored: %v)", step, b.Key, ev, err, bad, ok)
					}
					evictions += len(ev)
					if err != nil {
						refusals++
					}
				case op < 10: // an unban, of a unit or a range, held or not
					key := randRange()
					if r.IntN(2) == 0 {
						key = unitOf(randAddr())
					}
					got, gotOK := table.remove(key)
					want, wantOK := model.remove(key)
					if gotOK != wantOK || (wantOK && (got.Key != want.Key || recordOf(got) != recordOf(want) || got.Note != want.Note)) {
						t.Fatalf("step %d: remove(%s) = %+v %v, want %+v %v", step, key, got, gotOK, want, wantOK)
					}
				default:
					query(step)
				}
				if got, want := table.Len(), len(model.units)+len(model.ranges); got != want {
					t.Fatalf("step %d: Len() = %d, want %d", step, got, want)
				}
			}
			for step := range 30000 {
				query(30000 + step)
			}
			t.Logf("%d unit hits, %d range hits, %d misses; %d evictions, %d bans refused; %d unit and %d range records at the end",
				unitHits, hits, misses, evictions, refusals, len(model.units), len(model.ranges))
			// The test exercised every path it claims to.
			if unitHits == 0 || hits == 0 || misses == 0 {
				t.Errorf("unit hits %d, range hits %d, misses %d: want each > 0", unitHits, hits, misses)
			}
			if tc.max < 100 && (evictions == 0 || refusals == 0) {
				t.Errorf("evictions %d, bans refused %d with max %d: want both > 0", evictions, refusals, tc.max)
			}
		})
	}
}
