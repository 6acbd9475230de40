package kernel

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"net/netip"
	"os"
	"time"

	"github.com/gaissmai/bart"
	"github.com/google/nftables"

	"github.com/doorman/doorman/decide"
)

// slack is how far an element's time left may differ from its ban's before
// Check rewrites it; and how close to its end an element is not counted as
// drift, having ended in the kernel or not.
const slack = 2 * time.Second

// Check compares the kernel's ban sets with bans (the bans in force, from
// memory) and repairs what differs in one transaction: elements someone
// deleted (nft flush set), added or shortened, and bans whose write failed.
// A table, set, chain or rule gone makes it rebuild the table. It returns
// the elements that differed from what doorman had written (counted in
// doorman_nft_drift_total).
func (t *Table) Check(bans []decide.Ban, now time.Time) (int, error) {
	return t.checkWith(func(time.Time) []decide.Ban { return bans }, now)
}

// checkTries bounds how often a check dumps the sets again because a write
// happened during the dump; then the repair waits for the next check.
const checkTries = 3

// checkWith is Check with the bans read from bansOf after the writes seen so
// far. The sets are dumped without holding the table, so writes (each ban
// before its answer) do not wait for a dump; a write during the dump makes
// the dump stale, and the check dumps again.
func (t *Table) checkWith(bansOf func(time.Time) []decide.Ban, now time.Time) (int, error) {
	t.m.checks.Inc()
	for try := range checkTries {
		if try > 0 {
			now = time.Now()
		}
		t.mu.Lock()
		gen := t.gen
		t.mu.Unlock()
		bans := bansOf(now)
		kernel, err := t.dump()
		t.mu.Lock()
		if err == nil && t.gen != gen {
			t.mu.Unlock()
			continue
		}
		drift, err := t.repair(kernel, err, bans, now)
		t.mu.Unlock()
		return drift, err
	}
	return 0, nil
}

// dump reads the ban sets on a socket of its own.
func (t *Table) dump() ([]held, error) {
	c, err := t.reader()
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	var kernel []held
	for _, s := range []*nftables.Set{t.r.bans4, t.r.bans6} {
		els, err := c.GetSetElements(s)
		if errors.Is(err, os.ErrNotExist) {
			return nil, errRebuild
		} else if err != nil {
			return nil, err
		}
		kernel = append(kernel, intervals(els)...)
	}
	return kernel, nil
}

// repair, holding the table, compares the dump (or its error) and repairs.
func (t *Table) repair(kernel []held, err error, bans []decide.Ban, now time.Time) (int, error) {
	drift := 0
	if err == nil {
		drift, err = t.check(kernel, bans, now)
	}
	if errors.Is(err, errRebuild) {
		t.o.Log.Warn("nftables table incomplete; rebuilding it", "table", t.o.Name)
		drift, err = 1, t.rebuild(bans, now)
	}
	if err != nil {
		t.m.checkErrors.Inc()
		return drift, err
	}
	t.m.drift.Add(drift)
	return drift, nil
}

func (t *Table) check(kernel []held, bans []decide.Ban, now time.Time) (int, error) {
	t.deadline(max(t.o.Timeout, rebuildTimeout))
	if err := t.checkRules(); err != nil {
		return 0, err
	}
	// The kernel gives each element's time left when it dumps it, after now
	// by up to read: a dump of a large interval set takes seconds.
	read := time.Since(now)
	n := now.UnixNano()
	want := t.wantOf(bans, n)
	next := layout(want, n)
	drift := drifted(kernel, t.have, n, read, t.lag)

	nm := make(map[netip.Addr]span, len(next))
	for _, s := range next {
		nm[s.p.Addr()] = s
	}
	from := n + int64(expiring)
	var dels []interval
	var adds []span
	km := make(map[netip.Addr]bool, len(kernel))
	for _, h := range kernel {
		s, ok := nm[h.iv.start]
		same := ok && intervalOf(s.p) == h.iv && onTime(h.expires, time.Duration(s.until-n), read, t.lag)
		if same {
			km[h.iv.start] = true
		} else if h.expires == 0 || int64(h.expires) > int64(expiring) {
			dels = append(dels, h.iv)
		}
	}
	for _, s := range next {
		if !km[s.p.Addr()] && s.until > from {
			adds = append(adds, s)
		}
	}
	if len(dels)+len(adds) > 0 {
		if err := t.queue(dels, adds, n); err != nil {
			return drift, err
		}
		if err := t.flush(max(t.o.Timeout, rebuildTimeout), now); err != nil {
			return drift, err
		}
	}
	t.want, t.have = want, tableOf(next)
	clear(t.failed)
	return drift, nil
}

// checkRules reports errRebuild when a chain or one of its rules, or a
// never-ban set, is not there.
func (t *Table) checkRules() error {
	for _, c := range t.r.chains {
		rules, err := t.cc.GetRules(t.r.table, c)
		if errors.Is(err, os.ErrNotExist) || err == nil && len(rules) != len(t.r.rules(c)) {
			return errRebuild
		} else if err != nil {
			return err
		}
	}
	for _, s := range []*nftables.Set{t.r.never4, t.r.never6} {
		els, err := t.cc.GetSetElements(s)
		if errors.Is(err, os.ErrNotExist) {
			return errRebuild
		} else if err != nil {
			return err
		}
		if len(intervals(els)) != t.neverCount(s == t.r.never4) {
			return errRebuild
		}
	}
	return nil
}

func (t *Table) neverCount(is4 bool) int {
	var in []span
	for _, p := range t.o.NeverBan {
		if p.Addr().Is4() == is4 {
			in = append(in, span{p.Masked(), 1})
		}
	}
	all := all6
	if is4 {
		all = all4
	}
	return len(partition(all, in))
}

// drifted counts the elements in which the kernel differs from have, what
// doorman wrote, leaving out those within slack of their end.
func drifted(kernel []held, have *bart.Table[int64], n int64, read, lag time.Duration) int {
	d, matched := 0, 0
	for _, h := range kernel {
		var u int64
		in := false
		if p, ok := prefixOf(h.iv); ok {
			u, in = have.Get(p)
		}
		left := time.Duration(u - n)
		switch {
		case !in:
			d++ // not written by doorman
		case left <= slack: // ending: not counted either way
		case !onTime(h.expires, left, read, lag):
			d++
			matched++
		default:
			matched++
		}
	}
	live := 0
	for _, u := range have.All() {
		if time.Duration(u-n) > slack {
			live++
		}
	}
	return d + max(0, live-matched) // written by doorman, gone from the kernel
}

// prefixOf is the prefix whose addresses are iv, if there is one.
func prefixOf(iv interval) (netip.Prefix, bool) {
	s := iv.start.As16()
	hi, lo := binary.BigEndian.Uint64(s[:8]), binary.BigEndian.Uint64(s[8:])
	var ehi, elo uint64 // end; 0 past the top
	if iv.end.IsValid() {
		e := iv.end.As16()
		ehi, elo = binary.BigEndian.Uint64(e[:8]), binary.BigEndian.Uint64(e[8:])
	} else if iv.start.Is4() {
		ehi, elo = hi, lo&^0xffffffff+1<<32
	}
	// size = end - start, in 128 bits
	slo, borrow := bits.Sub64(elo, lo, 0)
	shi, _ := bits.Sub64(ehi, hi, borrow)
	var host int // log2(size), when size is a power of two
	switch {
	case shi == 0 && slo != 0 && slo&(slo-1) == 0:
		host = bits.TrailingZeros64(slo)
	case slo == 0 && shi != 0 && shi&(shi-1) == 0:
		host = 64 + bits.TrailingZeros64(shi)
	case slo == 0 && shi == 0 && !iv.end.IsValid() && !iv.start.Is4():
		host = 128 // ::/0
	default:
		return netip.Prefix{}, false
	}
	p := netip.PrefixFrom(iv.start, iv.start.BitLen()-host)
	return p, p.IsValid() && p.Masked().Addr() == iv.start
}

// onTime reports whether an element with expires left ends with its ban,
// which has left at now: within slack, or up to lag later (the kernel counts
// a timeout from when the write reaches it), the time left read up to read
// after now.
func onTime(expires, left, read, lag time.Duration) bool {
	d := expires - left
	return d >= -slack-read && d <= slack+lag
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
