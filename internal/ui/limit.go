package ui

import (
	"net/netip"
	"sync"
	"time"
)

// Login attempts are limited so the API token cannot be guessed through the
// page: each address (an IPv6 /64 counts as one) may get the token wrong
// LoginPerAddr times within any
// LoginWindow, and all addresses of a pool together LoginTotal times
// (against guessing from many addresses). Past a limit a login is refused
// with 429 before the token is compared, a right token included, so a
// guesser learns nothing.
//
// The windows slide: a wrong token counts for exactly LoginWindow after it
// was tried, so no boundary lets 2×LoginTotal comparisons through in a short
// time.
//
// There are two pools, each with its own LoginTotal: operators (a peer on
// loopback, on the unix socket, or in DOORMAN_ALLOW) and everyone else. A
// spray of wrong tokens from elsewhere fills the others' pool and never
// refuses an operator; the operators' pool still caps what guessing from an
// allowed range can try. A local proxy in front of the page makes every
// client a loopback peer, which the per-address limit then covers as one.
//
// The table of addresses holds at most MaxAddrs; when full, the addresses
// with no wrong token in the window are dropped, and if that is not enough
// the whole table is cleared, while the pools' limits still hold.
const (
	LoginWindow  = 10 * time.Minute
	LoginPerAddr = 5
	LoginTotal   = 50
	MaxAddrs     = 10000
)

// recent holds the times (Unix nanoseconds) of the last len(t) wrong
// tokens, the oldest at next; 0 is no entry.
type recent struct {
	t    []int64
	next int
}

func newRecent(n int) *recent { return &recent{t: make([]int64, n)} }

func (r *recent) add(now time.Time) {
	r.t[r.next] = now.UnixNano()
	r.next = (r.next + 1) % len(r.t)
}

// wait returns how long until fewer than len(t) wrong tokens lie within
// LoginWindow before now; 0 when one may be tried now. A time after now
// (the clock went back) counts as over.
func (r *recent) wait(now time.Time) time.Duration {
	oldest := r.t[r.next]
	if oldest == 0 {
		return 0
	}
	age := time.Duration(now.UnixNano() - oldest)
	if age < 0 || age >= LoginWindow {
		return 0
	}
	return LoginWindow - age
}

// active reports whether the last wrong token is still within the window.
func (r *recent) active(now time.Time) bool {
	last := r.t[(r.next+len(r.t)-1)%len(r.t)]
	age := time.Duration(now.UnixNano() - last)
	return last != 0 && age >= 0 && age < LoginWindow
}

// limiter is safe for concurrent use.
type limiter struct {
	mu        sync.Mutex
	operators *recent
	others    *recent
	byAddr    map[netip.Addr]*recent
}

func newLimiter() *limiter {
	return &limiter{operators: newRecent(LoginTotal), others: newRecent(LoginTotal), byAddr: map[netip.Addr]*recent{}}
}

func (l *limiter) pool(operator bool) *recent {
	if operator {
		return l.operators
	}
	return l.others
}

// allowed reports whether a login from a (an operator or not) may compare a
// token now, and if not, when it may again.
func (l *limiter) allowed(a netip.Addr, operator bool, now time.Time) (bool, time.Duration) {
	a = addrKey(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	wait := l.pool(operator).wait(now)
	if r := l.byAddr[a]; r != nil {
		wait = max(wait, r.wait(now))
	}
	return wait == 0, wait
}

// failed counts a wrong token from a.
func (l *limiter) failed(a netip.Addr, operator bool, now time.Time) {
	a = addrKey(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pool(operator).add(now)
	r := l.byAddr[a]
	if r == nil {
		if len(l.byAddr) >= MaxAddrs {
			for k, v := range l.byAddr {
				if !v.active(now) {
					delete(l.byAddr, k)
				}
			}
			if len(l.byAddr) >= MaxAddrs {
				clear(l.byAddr)
			}
		}
		r = newRecent(LoginPerAddr)
		l.byAddr[a] = r
	}
	r.add(now)
}

// addrKey is the per-address budget a belongs to: an IPv6 address's /64,
// which one client usually holds whole.
func addrKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a
}

// operator reports whether a login from peer (invalid: the unix socket) is
// an operator's: loopback, the unix socket, or an address in allow
// (DOORMAN_ALLOW).
func operator(peer netip.Addr, allow []netip.Prefix) bool {
	if !peer.IsValid() || peer.IsLoopback() {
		return true
	}
	for _, p := range allow {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}
