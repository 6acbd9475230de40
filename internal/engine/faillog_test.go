package engine

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// record is one log line as a handler saw it.
type record struct {
	level slog.Level
	msg   string
	attrs map[string]any
}

// recorder is a slog.Handler that keeps every record at or above level.
type recorder struct {
	level slog.Level
	mu    sync.Mutex
	recs  []record
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler           { return r }
func (r *recorder) WithGroup(string) slog.Handler                { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	attrs := map[string]any{}
	rec.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.Any(); return true })
	r.mu.Lock()
	r.recs = append(r.recs, record{rec.Level, rec.Message, attrs})
	r.mu.Unlock()
	return nil
}

// lines returns the records with msg at level.
func (r *recorder) lines(level slog.Level, msg string) []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []record
	for _, rec := range r.recs {
		if rec.level == level && rec.msg == msg {
			out = append(out, rec)
		}
	}
	return out
}

// unit is the i-th ban unit of the tests.
func unit(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
}

// fail logs one failure of unit u at now.
func fail(f *FailureLog, log *slog.Logger, now time.Time, u netip.Prefix) {
	f.Log(log, now, u, "ip", u.Addr().String(), "key", u.String(), "username", "admin", "failures", 1)
}

func TestFailureLogBurst(t *testing.T) {
	rec := &recorder{level: slog.LevelDebug}
	log := slog.New(rec)
	var f FailureLog
	// 1000 failures from 1000 units within one second.
	for i := range 1000 {
		fail(&f, log, t0.Add(time.Duration(i)*time.Millisecond), unit(i))
	}
	if got, want := len(rec.lines(slog.LevelInfo, "failure")), FailureLinesPerSecond; got != want {
		t.Errorf("info failure lines in the first second: %d, want %d", got, want)
	}
	if got, want := len(rec.lines(slog.LevelDebug, "failure")), 1000-FailureLinesPerSecond; got != want {
		t.Errorf("debug failure lines: %d, want %d", got, want)
	}
	// Nothing summed up before the window closes, even long after the burst.
	fail(&f, log, t0.Add(FailureSummaryEvery-time.Millisecond), unit(0))
	if got := rec.lines(slog.LevelInfo, "failures not logged at info"); len(got) != 0 {
		t.Fatalf("summary before the window closed: %v", got)
	}
	// The first failure after it writes the summary, then its own line.
	at := t0.Add(time.Hour)
	fail(&f, log, at, unit(5000))
	sums := rec.lines(slog.LevelInfo, "failures not logged at info")
	if len(sums) != 1 {
		t.Fatalf("summary lines: %d, want 1", len(sums))
	}
	// The failure at 9.999 s opened a new second: it went out at info.
	want := map[string]any{"failures": int64(990), "units": int64(990),
		"first": t0.Add(10 * time.Millisecond).Format(time.RFC3339), "last": t0.Add(999 * time.Millisecond).Format(time.RFC3339)}
	for k, v := range want {
		if got := sums[0].attrs[k]; got != v {
			t.Errorf("summary %s = %v, want %v", k, got, v)
		}
	}
	if _, ok := sums[0].attrs["units_estimated"]; ok {
		t.Errorf("990 units counted as an estimate: %v", sums[0].attrs)
	}
	infos := rec.lines(slog.LevelInfo, "failure")
	if last := infos[len(infos)-1]; last.attrs["key"] != unit(5000).String() {
		t.Errorf("the failure after the summary: %v, want at info", last.attrs)
	}
}

// A steady attack at 35 failures/s for a minute: at most 10 info lines per
// second, a summary at most every 10 s, and every failure either written at
// info or counted in a summary.
func TestFailureLogSteadyAttack(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) {
			rec := &recorder{level: level}
			log := slog.New(rec)
			var f FailureLog
			const rate, seconds = 35, 60
			step := time.Second / rate
			total := 0
			for i := range rate * seconds {
				fail(&f, log, t0.Add(time.Duration(i)*step), unit(i%700))
				total++
			}
			// A late failure flushes the last window.
			end := t0.Add((seconds + 15) * time.Second)
			fail(&f, log, end, unit(0))
			total++

			infos := rec.lines(slog.LevelInfo, "failure")
			sums := rec.lines(slog.LevelInfo, "failures not logged at info")
			counted := 0
			for _, s := range sums {
				counted += int(s.attrs["failures"].(int64))
				if u := s.attrs["units"].(int64); u < 1 || u > 700 {
					t.Errorf("summary units = %d, want 1..700", u)
				}
			}
			if got := len(infos) + counted; got != total {
				t.Errorf("info lines %d + summed up %d = %d, want every failure (%d)", len(infos), counted, got, total)
			}
			if max := (seconds + 1) * FailureLinesPerSecond; len(infos) > max+1 {
				t.Errorf("info failure lines: %d, want at most %d", len(infos), max+1)
			}
			if len(sums) < seconds/10-1 || len(sums) > seconds/10+1 {
				t.Errorf("summary lines: %d, want about one per %v over %d s", len(sums), FailureSummaryEvery, seconds)
			}
			debug := len(rec.lines(slog.LevelDebug, "failure"))
			if level == slog.LevelDebug && len(infos)+debug != total {
				t.Errorf("at debug: %d info + %d debug failure lines, want every failure (%d)", len(infos), debug, total)
			}
			if level == slog.LevelInfo && debug != 0 {
				t.Errorf("at info: %d debug lines reached the handler", debug)
			}
		})
	}
}

// No one-second window holds more than FailureLinesPerSecond info lines,
// whatever the arrival pattern.
func TestFailureLogRateBound(t *testing.T) {
	rec := &recorder{level: slog.LevelInfo}
	log := slog.New(rec)
	var f FailureLog
	rng := rand.New(rand.NewPCG(42, 42))
	now := t0
	var times []time.Time
	for range 10000 {
		now = now.Add(time.Duration(rng.IntN(int(100 * time.Millisecond))))
		before := len(rec.recs)
		fail(&f, log, now, unit(rng.IntN(50)))
		for _, r := range rec.recs[before:] {
			if r.msg == "failure" {
				times = append(times, now)
			}
		}
	}
	if len(times) > 10000*3/4 {
		t.Fatalf("%d of 10000 failures at info: the budget was hardly reached", len(times))
	}
	// A window holds FailureLinesPerSecond lines, and any span shorter than
	// a second meets at most two windows.
	for i := 2 * FailureLinesPerSecond; i < len(times); i++ {
		if d := times[i].Sub(times[i-2*FailureLinesPerSecond]); d < time.Second {
			t.Fatalf("%d info lines within %v", 2*FailureLinesPerSecond+1, d)
		}
	}
}

// Distinct units are counted exactly up to exactUnits, then estimated
// within a few percent, in bounded memory.
func TestUnitCount(t *testing.T) {
	for _, n := range []int{0, 1, 3, exactUnits, exactUnits + 1, 5000, 100000, 1000000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var u unitCount
			for i := range n {
				u.add(unit(i))
				u.add(unit(i)) // repeats do not count
			}
			got, exact := u.count()
			if n <= exactUnits {
				if got != n || !exact {
					t.Fatalf("count = %d (exact %v), want %d exactly", got, exact, n)
				}
			} else if exact || got < n*95/100 || got > n*105/100 {
				t.Fatalf("count = %d (exact %v), want an estimate within 5%% of %d", got, exact, n)
			}
			if len(u.exact) > exactUnits {
				t.Fatalf("exact set holds %d units, want at most %d", len(u.exact), exactUnits)
			}
			u.reset()
			if got, exact := u.count(); got != 0 || !exact {
				t.Fatalf("after reset: %d (exact %v), want 0", got, exact)
			}
		})
	}
}

func TestFailureLogConcurrent(t *testing.T) {
	rec := &recorder{level: slog.LevelDebug}
	log := slog.New(rec)
	var f FailureLog
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				fail(&f, log, t0.Add(time.Duration(i)*time.Millisecond), unit(g*1000+i))
			}
		})
	}
	wg.Wait()
	fail(&f, log, t0.Add(time.Hour), unit(0))
	infos := rec.lines(slog.LevelInfo, "failure")
	sums := rec.lines(slog.LevelInfo, "failures not logged at info")
	counted := 0
	for _, s := range sums {
		counted += int(s.attrs["failures"].(int64))
	}
	if len(infos)+counted != 8*500+1 {
		t.Fatalf("%d info lines + %d summed up, want %d", len(infos), counted, 8*500+1)
	}
}
