package engine

import (
	"context"
	"hash/maphash"
	"log/slog"
	"math"
	"math/bits"
	"net/netip"
	"sync"
	"time"
)

// The failure lines' budget at info level.
const (
	FailureLinesPerSecond = 10               // failure lines a second at info
	FailureSummaryEvery   = 10 * time.Second // the others are summed up at most this often
)

// FailureLog writes the webhook's failure lines without flooding the log
// under attack (35k failures/s would be 35k lines/s): at most
// FailureLinesPerSecond a second go out at info; the others go out at debug,
// so at DOORMAN_LOG_LEVEL=debug every failure is logged, and are counted. One
// info line, msg="failures not logged at info", sums them up: how many, from
// how many distinct ban units, the first and the last one's time.
//
// There is no goroutine and no timer: time is passed in, and the summary of
// a window (FailureSummaryEvery from its first uncounted failure) is written
// by the first failure that arrives after the window closed. When an attack
// stops, its last summary waits for the next failure; its first= and last=
// say when the failures it counts happened.
//
// Ban lines are written by Local.commit and never pass through here.
//
// The zero value is ready to use. A FailureLog is safe for concurrent use and
// must not be copied.
type FailureLog struct {
	mu     sync.Mutex
	second time.Time // start of the current one-second window
	lines  int       // info lines written in it
	first  time.Time // first failure not logged at info since the last summary
	last   time.Time // the latest one
	n      int       // how many
	units  unitCount
}

// Log writes the line msg="failure" of one failure of ban unit key at now,
// with attrs, at info while the second's budget lasts and at debug after.
func (f *FailureLog) Log(log *slog.Logger, now time.Time, key netip.Prefix, attrs ...any) {
	f.mu.Lock()
	var summary []any
	if f.n > 0 && (now.Sub(f.first) >= FailureSummaryEvery || now.Before(f.first)) {
		summary = f.summaryLocked()
	}
	if now.Sub(f.second) >= time.Second || now.Before(f.second) {
		f.second, f.lines = now, 0
	}
	level := slog.LevelInfo
	if f.lines < FailureLinesPerSecond {
		f.lines++
	} else {
		level = slog.LevelDebug
		if f.n == 0 {
			f.first = now
		}
		f.n++
		f.last = now
		f.units.add(key)
	}
	f.mu.Unlock()
	if summary != nil {
		log.Info("failures not logged at info", summary...)
	}
	log.Log(context.Background(), level, "failure", attrs...)
}

// summaryLocked returns the summary line's attributes and starts a new
// window.
func (f *FailureLog) summaryLocked() []any {
	units, exact := f.units.count()
	attrs := []any{"failures", f.n, "units", units, "first", f.first.Format(time.RFC3339), "last", f.last.Format(time.RFC3339)}
	if !exact {
		attrs = append(attrs, "units_estimated", true)
	}
	f.n = 0
	f.units.reset()
	return attrs
}

// exactUnits is how many distinct units a summary counts exactly; past it,
// the count is a HyperLogLog estimate in hllRegisters bytes (standard error
// 1.04/√4096, about 1.6%). A set of every unit of a million-address spray
// would cost tens of megabytes.
const (
	exactUnits   = 1024
	hllBits      = 12
	hllRegisters = 1 << hllBits
)

// unitCount counts distinct ban units in bounded memory. The zero value is
// ready to use.
type unitCount struct {
	exact map[netip.Prefix]struct{} // up to exactUnits
	over  bool                      // more than exactUnits seen: estimate
	reg   [hllRegisters]uint8
	seed  maphash.Seed
}

func (u *unitCount) add(key netip.Prefix) {
	if u.exact == nil {
		u.exact = make(map[netip.Prefix]struct{}, 64)
		u.seed = maphash.MakeSeed()
	}
	if !u.over {
		u.exact[key] = struct{}{}
		if len(u.exact) > exactUnits {
			u.over = true
			clear(u.exact)
		}
	}
	var b [17]byte
	a := key.Addr().As16()
	copy(b[:], a[:])
	b[16] = byte(key.Bits())
	h := maphash.Bytes(u.seed, b[:])
	// The first hllBits bits pick the register; it keeps the longest run of
	// leading zeros seen in the rest, plus one.
	i := h >> (64 - hllBits)
	rho := uint8(bits.LeadingZeros64(h<<hllBits|1<<(hllBits-1)) + 1)
	if rho > u.reg[i] {
		u.reg[i] = rho
	}
}

// count returns the number of distinct units added since the last reset, and
// whether it is exact.
func (u *unitCount) count() (int, bool) {
	if !u.over {
		return len(u.exact), true
	}
	const m = float64(hllRegisters)
	sum, zeros := 0.0, 0
	for _, r := range u.reg {
		sum += math.Ldexp(1, -int(r))
		if r == 0 {
			zeros++
		}
	}
	e := 0.7213 / (1 + 1.079/m) * m * m / sum
	if e <= 2.5*m && zeros > 0 {
		e = m * math.Log(m/float64(zeros)) // linear counting, better for small counts
	}
	return int(math.Round(e)), false
}

func (u *unitCount) reset() {
	clear(u.exact)
	u.over = false
	u.reg = [hllRegisters]uint8{}
}
