package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/gaissmai/bart"
	"github.com/google/nftables"

	"github.com/doorman/doorman/decide"
)

var (
	all4 = netip.MustParsePrefix("0.0.0.0/0")
	all6 = netip.MustParsePrefix("::/0")
)

// rebuildTimeout bounds the start's transaction, which may carry a million
// bans.
const rebuildTimeout = 2 * time.Minute

// wantOf indexes the bans that go to the kernel.
func (t *Table) wantOf(bans []decide.Ban, n int64) *bart.Table[int64] {
	want := new(bart.Table[int64])
	for _, b := range bans {
		if u := b.Until.UnixNano(); t.eligible(b) && u > n {
			want.Insert(b.Key, u)
		}
	}
	return want
}

// spans lists tb's entries inside region that end after from.
func spans(tb *bart.Table[int64], region netip.Prefix, from int64) []span {
	var out []span
	for p, u := range tb.Subnets(region) {
		if u > from {
			out = append(out, span{p, u})
		}
	}
	return out
}

// layout is the elements the bans of want make, both families.
func layout(want *bart.Table[int64], n int64) []span {
	from := n + int64(expiring) // under a millisecond left would be no timeout at all
	return append(partition(all4, spans(want, all4, from)), partition(all6, spans(want, all6, from))...)
}

func tableOf(ss []span) *bart.Table[int64] {
	tb := new(bart.Table[int64])
	for _, s := range ss {
		tb.Insert(s.p, s.until)
	}
	return tb
}

// queue adds to t.cc the element writes of dels and adds, by family, in
// messages small enough for netlink.
func (t *Table) queue(dels []interval, adds []span, n int64) error {
	for _, is4 := range []bool{true, false} {
		set := t.r.bansOf(is4)
		var d []interval
		for _, iv := range dels {
			if iv.start.Is4() == is4 {
				d = append(d, iv)
			}
		}
		for _, c := range chunks(deletions(d)) {
			if err := t.cc.SetDeleteElements(set, c); err != nil {
				return err
			}
		}
		var a []span
		for _, s := range adds {
			if s.p.Addr().Is4() == is4 {
				a = append(a, s)
			}
		}
		for _, c := range chunks(elements(a, n, true)) {
			if err := t.cc.SetAddElements(set, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// Rebuild replaces doorman's table by one holding bans (those in force that
// go to the kernel) and the never-ban addresses, in one transaction: the
// kernel holds the old table or the new one, never a mix.
func (t *Table) Rebuild(bans []decide.Ban, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rebuild(bans, now)
}

func (t *Table) rebuild(bans []decide.Ban, now time.Time) error {
	n := now.UnixNano()
	want := t.wantOf(bans, n)
	els := layout(want, n)
	if len(els) > 2*t.o.Max {
		return fmt.Errorf("nftables table %q: %d elements, more than twice DOORMAN_MAX_BANS (%d)", t.o.Name, len(els), t.o.Max)
	}
	if err := t.r.create(t.cc, t.o.Ports); err != nil {
		return err
	}
	never := make([]span, len(t.o.NeverBan))
	for i, p := range t.o.NeverBan {
		never[i] = span{p.Masked(), 1}
	}
	for _, s := range []struct {
		set *nftables.Set
		all netip.Prefix
	}{{t.r.never4, all4}, {t.r.never6, all6}} {
		var in []span
		for _, e := range never {
			if e.p.Addr().Is4() == s.all.Addr().Is4() {
				in = append(in, e)
			}
		}
		for _, c := range chunks(elements(partition(s.all, in), n, false)) {
			if err := t.cc.SetAddElements(s.set, c); err != nil {
				return err
			}
		}
	}
	if err := t.queue(nil, els, n); err != nil {
		return err
	}
	if err := t.flush(max(t.o.Timeout, rebuildTimeout), now); err != nil {
		return err
	}
	t.want, t.have = want, tableOf(els)
	clear(t.failed)
	return nil
}

// Apply puts bans into the kernel (a ban below DOORMAN_NFT_MIN_COUNT or
// over leaves it) and lifts the bans of keys, in one transaction. Only the
// elements of the ranges concerned are rewritten. An error leaves the kernel
// as it was; the next Apply on those ranges, or Check, writes them again.
func (t *Table) Apply(puts []decide.Ban, lifts []netip.Prefix, now time.Time) error {
	if len(puts) == 0 && len(lifts) == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.apply(puts, lifts, now)
}

func (t *Table) apply(puts []decide.Ban, lifts []netip.Prefix, now time.Time) error {
	n := now.UnixNano()
	keys := make([]netip.Prefix, 0, len(puts)+len(lifts))
	for _, b := range puts {
		if u := b.Until.UnixNano(); t.eligible(b) && u > n {
			t.want.Insert(b.Key, u)
		} else {
			t.want.Delete(b.Key)
		}
		keys = append(keys, b.Key)
	}
	for _, k := range lifts {
		t.want.Delete(k)
		keys = append(keys, k)
	}
	if t.have.Size() > 2*t.o.Max {
		return t.failedFor(puts, fmt.Errorf("nftables table %q: %d elements, more than twice DOORMAN_MAX_BANS (%d)", t.o.Name, t.have.Size(), t.o.Max))
	}
	regions := t.regions(keys)
	var dels []interval
	var adds []span
	layouts := make([][]span, len(regions))
	from := n + int64(expiring)
	for i, r := range regions {
		layouts[i] = partition(r, spans(t.want, r, from))
		d, a := diff(spans(t.have, r, 0), layouts[i], from)
		dels, adds = append(dels, d...), append(adds, a...)
	}
	if err := t.queue(dels, adds, n); err != nil {
		return t.failedFor(puts, err)
	}
	if err := t.flush(t.o.Timeout, now); err != nil {
		return t.failedFor(puts, err)
	}
	for i, r := range regions {
		for p := range t.have.Subnets(r) {
			t.have.Delete(p)
		}
		for _, s := range layouts[i] {
			t.have.Insert(s.p, s.until)
		}
	}
	for _, b := range puts {
		delete(t.failed, b.Key)
	}
	return nil
}

// failedFor marks puts as not written and returns err.
func (t *Table) failedFor(puts []decide.Ban, err error) error {
	if len(t.failed) > t.o.Max {
		clear(t.failed) // bounded; Check writes them all again
	}
	for _, b := range puts {
		t.failed[b.Key] = true
	}
	return err
}

// diff returns the elements of cur to delete and those of next to add so that
// the kernel holds next. Elements ending before from are left to the
// kernel's own timeout: it may have dropped them already.
func diff(cur, next []span, from int64) (dels []interval, adds []span) {
	nm := make(map[netip.Prefix]int64, len(next))
	for _, s := range next {
		nm[s.p] = s.until
	}
	cm := make(map[netip.Prefix]int64, len(cur))
	for _, s := range cur {
		cm[s.p] = s.until
		if u, ok := nm[s.p]; (!ok || u != s.until) && s.until > from {
			dels = append(dels, intervalOf(s.p))
		}
	}
	for _, s := range next {
		if u, ok := cm[s.p]; !ok || u != s.until {
			adds = append(adds, s)
		}
	}
	return dels, adds
}

// regions are the widest prefixes, in what should be and what is in the
// kernel, around each of keys; none inside another.
func (t *Table) regions(keys []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(keys))
	for _, k := range keys {
		r := k.Masked()
		for {
			w := outermost(t.have, outermost(t.want, r))
			if w == r {
				break
			}
			r = w
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Bits() - b.Bits() })
	var kept []netip.Prefix
	for _, r := range out {
		if !slices.ContainsFunc(kept, func(k netip.Prefix) bool { return k.Overlaps(r) }) {
			kept = append(kept, r)
		}
	}
	return kept
}

func outermost(tb *bart.Table[int64], p netip.Prefix) netip.Prefix {
	for q := range tb.Supernets(p) {
		if q.Bits() < p.Bits() {
			p = q
		}
	}
	return p
}

// errRebuild: the table is not whole; Check rebuilds it.
var errRebuild = errors.New("rebuild")
