package minutes

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

func at(min, sec int) time.Time {
	return t0.Add(time.Duration(min)*time.Minute + time.Duration(sec)*time.Second)
}

func TestRing(t *testing.T) {
	type add struct {
		s        int
		n        uint64
		min, sec int
	}
	for _, tc := range []struct {
		name string
		adds []add
		s    int
		now  time.Time
		want map[int]uint64 // index in Last → count; others 0
	}{
		{"empty", nil, 0, at(0, 0), nil},
		{"one minute", []add{{0, 1, 0, 0}, {0, 2, 0, 59}, {1, 5, 0, 30}}, 0, at(0, 59), map[int]uint64{59: 3}},
		{"other series", []add{{0, 1, 0, 0}, {1, 5, 0, 30}}, 1, at(0, 59), map[int]uint64{59: 5}},
		{"minutes apart", []add{{0, 1, 0, 0}, {0, 2, 1, 0}, {0, 4, 3, 10}}, 0, at(3, 20), map[int]uint64{56: 1, 57: 2, 59: 4}},
		{"an hour keeps 60 minutes", []add{{0, 1, 0, 0}, {0, 2, 59, 0}}, 0, at(59, 59), map[int]uint64{0: 1, 59: 2}},
		{"older than an hour is gone", []add{{0, 1, 0, 0}, {0, 2, 59, 0}}, 0, at(60, 0), map[int]uint64{58: 2}},
		{"slot reused an hour later", []add{{0, 7, 0, 0}, {0, 1, 60, 0}}, 0, at(60, 0), map[int]uint64{59: 1}},
		{"late add for an older minute dropped", []add{{0, 1, 60, 0}, {0, 9, 0, 0}}, 0, at(60, 0), map[int]uint64{59: 1}},
		{"read before adds", []add{{0, 3, 10, 0}}, 0, at(5, 0), nil},
		{"series out of range ignored", []add{{2, 1, 0, 0}, {-1, 1, 0, 0}}, 2, at(0, 0), nil},
		{"saturates", []add{{0, countMask - 1, 0, 0}, {0, 5, 0, 1}}, 0, at(0, 2), map[int]uint64{59: countMask}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(2)
			for _, a := range tc.adds {
				r.Add(a.s, a.n, at(a.min, a.sec))
			}
			got := r.Last(tc.s, tc.now)
			for i, n := range got {
				if n != tc.want[i] {
					t.Errorf("Last[%d]: got %d, want %d (all: %v)", i, n, tc.want[i], got)
				}
			}
		})
	}
}

func TestBefore1970(t *testing.T) {
	r := New(1)
	r.Add(0, 1, time.Unix(-61, 0)) // minute -2
	r.Add(0, 2, time.Unix(-1, 0))  // minute -1
	got := r.Last(0, time.Unix(-1, 0))
	if got[58] != 1 || got[59] != 2 {
		t.Errorf("got %v, want 1 then 2 at the end", got)
	}
}

// The ring against a map from minute to count, on random adds moving
// forward in time with jitter, read at random moments.
func TestRingModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	r := New(3)
	model := map[[2]int64]uint64{} // {series, minute} → count
	latest := map[int64]int64{}    // slot → latest minute written (an older one is dropped)
	now := t0
	for i := range 20000 {
		now = now.Add(time.Duration(rng.IntN(4000)) * time.Millisecond)
		at := now.Add(-time.Duration(rng.IntN(90)) * time.Second) // requests finish out of order
		s, n := rng.IntN(3), uint64(1+rng.IntN(3))
		m := minute(at)
		if l, ok := latest[slot(m)]; !ok || m >= l {
			latest[slot(m)] = m
			model[[2]int64{int64(s), m}] += n
		}
		r.Add(s, n, at)
		if i%97 == 0 {
			for s := range 3 {
				got := r.Last(s, now)
				for k := range Minutes {
					mi := minute(now) - Minutes + 1 + int64(k)
					want := uint64(0)
					if latest[slot(mi)] == mi {
						want = model[[2]int64{int64(s), mi}]
					}
					if got[k] != want {
						t.Fatalf("step %d series %d minute %d: got %d, want %d", i, s, mi, got[k], want)
					}
				}
			}
		}
	}
}

// Concurrent adds across a minute boundary lose nothing.
func TestRingConcurrent(t *testing.T) {
	r := New(2)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10000 {
				r.Add(g%2, 1, at(0, 55+i%10)) // seconds 55..64: two minutes
			}
		})
	}
	wg.Wait()
	for s := range 2 {
		got := r.Last(s, at(1, 0))
		if got[58] != 4*5000 || got[59] != 4*5000 {
			t.Errorf("series %d: got %d and %d, want %d each", s, got[58], got[59], 4*5000)
		}
	}
}

func TestAddAllocs(t *testing.T) {
	r := New(7)
	now := t0
	if n := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Second)
		r.Add(3, 1, now)
	}); n != 0 {
		t.Errorf("Add allocates %v times per call, want 0", n)
	}
}

func BenchmarkAdd(b *testing.B) {
	r := New(7)
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		r.Add(3, 1, now)
	}
}

func BenchmarkAddParallel(b *testing.B) {
	r := New(7)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.Add(i%7, 1, t0)
			i++
		}
	})
}
