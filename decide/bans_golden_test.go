package decide

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// banModel is the slow, obvious BanTable: unit records in a slice ordered
// from added or renewed longest ago to most recently, range records in a map,
// and lookup by a linear scan.
type banModel struct {
	max    int
	units  []Ban // oldest first
	ranges map[netip.Prefix]Ban
}

func (m *banModel) put(b Ban, unit bool) (evicted Ban, didEvict, ok bool) {
	if !unit {
		if _, exists := m.ranges[b.Key]; !exists && len(m.ranges) >= m.max {
			return Ban{}, false, false
		}
		m.ranges[b.Key] = b
		return Ban{}, false, true
	}
	if i := slices.IndexFunc(m.units, func(u Ban) bool { return u.Key == b.Key }); i >= 0 {
		m.units = slices.Delete(m.units, i, i+1)
	} else if len(m.units) >= m.max {
		evicted, didEvict = m.units[0], true
		m.units = m.units[1:]
	}
	m.units = append(m.units, b)
	return evicted, didEvict, true
}

func (m *banModel) remove(key netip.Prefix, unit bool) (Ban, bool) {
	if !unit {
		b, ok := m.ranges[key]
		delete(m.ranges, key)
		return b, ok
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
				case op < 6: // a unit ban, new or renewed
					b := randBan(unitOf(randAddr()), true)
					gotEv, gotDid, gotOK := table.put(b, true)
					wantEv, wantDid, wantOK := model.put(b, true)
					if gotDid != wantDid || gotOK != wantOK || (wantDid && (gotEv.Key != wantEv.Key || recordOf(gotEv) != recordOf(wantEv))) {
						t.Fatalf("step %d: put(%s) evicted %v %v ok %v, want %v %v ok %v", step, b.Key, gotEv, gotDid, gotOK, wantEv, wantDid, wantOK)
					}
					if wantDid {
						evictions++
					}
				case op < 9: // a range ban
					b := randBan(randRange(), false)
					_, _, gotOK := table.put(b, false)
					if _, _, wantOK := model.put(b, false); gotOK != wantOK {
						t.Fatalf("step %d: put range %s ok %v, want %v", step, b.Key, gotOK, wantOK)
					}
					if !gotOK {
						refusals++
					}
				case op < 10: // an unban, of a unit or a range, held or not
					unit := r.IntN(2) == 0
					key := randRange()
					if unit {
						key = unitOf(randAddr())
					}
					got, gotOK := table.remove(key, unit)
					want, wantOK := model.remove(key, unit)
					if gotOK != wantOK || (wantOK && (got.Key != want.Key || recordOf(got) != recordOf(want) || got.Note != want.Note)) {
						t.Fatalf("step %d: remove(%s, unit %v) = %+v %v, want %+v %v", step, key, unit, got, gotOK, want, wantOK)
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
			t.Logf("%d unit hits, %d range hits, %d misses; %d evictions, %d ranges refused; %d unit and %d range records at the end",
				unitHits, hits, misses, evictions, refusals, len(model.units), len(model.ranges))
			// The test exercised every path it claims to.
			if unitHits == 0 || hits == 0 || misses == 0 {
				t.Errorf("unit hits %d, range hits %d, misses %d: want each > 0", unitHits, hits, misses)
			}
			if tc.max < 100 && (evictions == 0 || refusals == 0) {
				t.Errorf("evictions %d, ranges refused %d with max %d: want both > 0", evictions, refusals, tc.max)
			}
		})
	}
}
