package decide

import (
	"net/netip"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// rangeTracker remembers, per range (a /24 or /48 by default), the unit bans
// made by failures inside it, to escalate to a range ban when
// Policy.RangeThreshold of them are in force at once. Bound and eviction
// rule: at most max ranges (the ban table's size); the range whose last unit
// ban is oldest is forgotten first. Each range keeps fewer than the threshold
// members, since reaching it bans the range and forgets them. The Core's
// writer lock guards it.
type rangeTracker struct {
	lru *simplelru.LRU[pkey, []member]
}

type member struct {
	unit  pkey
	until int64
}

func newRangeTracker(max int) *rangeTracker {
	lru, err := simplelru.NewLRU[pkey, []member](max, nil)
	if err != nil {
		panic(err) // max >= 1, validated
	}
	return &rangeTracker{lru: lru}
}

// Widest networks a range ban follows (SetNetworks): an announced /8
// escalates to its /16 only.
const (
	WidestNetworkIPv4 = 16
	WidestNetworkIPv6 = 32
)

// SetNetworks makes range escalation ban the announced network holding an
// address (f returns it, or an invalid prefix when unknown) instead of the
// fixed range prefix, clamped to [WidestNetwork, fixed range prefix]. f is
// called on the writer path only, never by Decide. Call before serving.
func (c *Core) SetNetworks(f func(netip.Addr) netip.Prefix) { c.networks = f }

// rangeOf is the range a clean address escalates to.
func (c *Core) rangeOf(a netip.Addr) netip.Prefix {
	bits, widest := c.policy.IPv6RangePrefix, WidestNetworkIPv6
	if a.Is4() {
		bits, widest = c.policy.IPv4RangePrefix, WidestNetworkIPv4
	}
	if c.networks != nil {
		if n := c.networks(a); n.IsValid() && n.Addr().Is4() == a.Is4() && n.Contains(a) && n.Bits() < bits {
			bits = max(n.Bits(), widest)
		}
	}
	p, _ := a.Prefix(bits)
	return p
}

// escalate counts res's new unit ban in its range and, at the threshold,
// bans the range (reason range, escalating like any ban) and folds the unit
// bans it covers into it to free their records. c.wmu is held.
func (c *Core) escalate(a netip.Addr, res *FailResult, now time.Time) {
	if c.policy.RangeThreshold <= 0 {
		return
	}
	r := c.rangeOf(a)
	rk := keyOf(r)
	n := now.UnixNano()
	old, _ := c.ranges.lru.Get(rk)
	live := make([]member, 0, len(old)+1)
	for _, m := range old {
		// Still the same ban, still in force: not lifted, evicted or renewed.
		if rec, ok := c.bans.get(m.unit.prefix()); ok && rec.until == m.until && rec.until > n && rec.kind == kindFailures {
			live = append(live, m)
		}
	}
	live = append(live, member{unit: keyOf(res.Key), until: res.Ban.Until.UnixNano()})
	if len(live) < c.policy.RangeThreshold {
		c.ranges.lru.Add(rk, live)
		return
	}
	c.ranges.lru.Remove(rk)
	rb := Ban{Key: r, Range: true, Count: c.nextCount(r, now), Failures: len(live)}
	rb.Until = now.Add(c.length(rb.Count))
	ev, err := c.bans.put(rb, false, now)
	if err != nil {
		return // full of manual bans: the unit bans hold
	}
	res.Range, res.Ban = true, rb
	res.Evicted = append(res.Evicted, ev...)
	for _, m := range live {
		if m.until <= rb.Until.UnixNano() {
			if b, ok := c.bans.remove(m.unit.prefix()); ok {
				res.Folded = append(res.Folded, b)
			}
		}
	}
}

// Escalate counts unit, a failure ban of a's unit made elsewhere (in cluster
// mode, by Redis) and already applied, toward its range as Fail does. The
// result has Range set when the range was banned.
func (c *Core) Escalate(a netip.Addr, unit Ban, now time.Time) FailResult {
	a = c.clean(a)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	res := FailResult{Addr: a, Key: unit.Key, Banned: true, Ban: unit, Unit: unit}
	if unit.Manual || unit.Range || unit.Key != c.unit(a) {
		return res // only failure bans of units count toward a range
	}
	c.escalate(a, &res, now)
	return res
}
