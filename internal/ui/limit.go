package ui

import (
	"net/netip"
	"sync"
	"time"
)

// Login attempts are limited so the API token cannot be guessed through the
// page: each address may get the token wrong PerAddr times within Window,
// and all addresses together Total times (against guessing from many
// addresses). Past either limit every login is refused with 429 until the
// window ends, a right token included, so a guesser learns nothing. The
// table of addresses holds at most MaxAddrs; when full the whole table is
// cleared, while the total limit still holds.
const (
	LoginWindow  = 10 * time.Minute
	LoginPerAddr = 5
	LoginTotal   = 50
	MaxAddrs     = 10000
)

type limiter struct {
	mu     sync.Mutex
	start  time.Time // of the current window
	total  int
	byAddr map[netip.Addr]int
}

func newLimiter() *limiter { return &limiter{byAddr: map[netip.Addr]int{}} }

func (l *limiter) roll(now time.Time) {
	if now.Sub(l.start) >= LoginWindow || now.Before(l.start) {
		l.start, l.total = now, 0
		clear(l.byAddr)
	}
}

// allowed reports whether a login from a may be tried now, and if not, when
// it may be tried again.
func (l *limiter) allowed(a netip.Addr, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.roll(now)
	if l.total >= LoginTotal || l.byAddr[a] >= LoginPerAddr {
		return false, l.start.Add(LoginWindow).Sub(now)
	}
	return true, 0
}

// failed counts a wrong token from a.
func (l *limiter) failed(a netip.Addr, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.roll(now)
	if len(l.byAddr) >= MaxAddrs {
		clear(l.byAddr)
	}
	l.byAddr[a]++
	l.total++
}
