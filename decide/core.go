package decide

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Reason says why a verdict was reached. Its String form is the value of the
// X-Doorman-Reason header.
type Reason uint8

const (
	Allowed Reason = iota
	Denylisted
	NotAllowlisted
	Banned
	NoClientIP
	Feed    // in a deny feed (DOORMAN_DENY_FEEDS)
	Country // in a denied country, or outside the allowed ones
	ASN     // in a denied network (DOORMAN_DENY_ASNS)
	// NumReasons is the number of Reasons: arrays indexed by Reason have this length.
	NumReasons
)

var reasonNames = [NumReasons]string{"allowed", "denylisted", "not-allowlisted", "banned", "no-client-ip", "feed", "country", "asn"}

func (r Reason) String() string { return reasonNames[r] }

// Reasons lists every Reason, in order.
func Reasons() []Reason {
	return []Reason{Allowed, Denylisted, NotAllowlisted, Banned, NoClientIP, Feed, Country, ASN}
}

// Verdict is the answer for one address at one instant.
type Verdict struct {
	Allow  bool
	Reason Reason
	Key    netip.Prefix // the ban's key, for Banned
	Until  time.Time    // the ban's end, for Banned
	// Source names the list that denied: the feed's name for Feed, the
	// country code for Country, "AS64500" for ASN. It points at a string
	// the lists already hold, so a verdict still allocates nothing.
	Source string
}

// Policy is what failures lead to.
type Policy struct {
	MaxFailures int           // failures within FindTime that ban
	FindTime    time.Duration // the sliding window failures are counted in
	BanTime     time.Duration // the first ban's length
	BanFactor   float64       // each further ban of a unit lasts this much longer
	MaxBanTime  time.Duration // cap on a ban's length; also how long a unit's ban count is remembered after its last ban ends
	IPv4Prefix  int           // bits of an IPv4 ban unit (32: the address)
	IPv6Prefix  int           // bits of an IPv6 ban unit (64: its /64)
	// RangeThreshold unit bans in force at once inside one range (a /24 or
	// a /48 by default) ban the range itself; 0 turns range bans off.
	RangeThreshold  int
	IPv4RangePrefix int
	IPv6RangePrefix int
	// Jitter adds up to this fraction of random length to each ban made by
	// failures or escalated, so that ban ends cannot be predicted.
	Jitter float64
	// NAT64 prefixes (/96, RFC 6052): an address inside is judged and
	// banned as the IPv4 address embedded in its last 32 bits.
	NAT64 []netip.Prefix
}

// Widest bans the Core accepts: a wider one would lock out a large share of
// the Internet with one call.
const (
	WidestIPv4 = 8
	WidestIPv6 = 32
)

// ErrTooWide is returned for a ban wider than WidestIPv4 or WidestIPv6.
var ErrTooWide = fmt.Errorf("ban wider than /%d (IPv4) or /%d (IPv6)", WidestIPv4, WidestIPv6)

// Core makes decisions and records failures and bans. It is safe for
// concurrent use; see the package doc for what each method may cost.
type Core struct {
	policy Policy
	lists  atomic.Pointer[Lists]
	bans   *BanTable
	fails  *Tracker
	ranges *rangeTracker
	random func() float64 // [0, 1), for Jitter
	// networks is the announced network of an address, for range bans
	// (SetNetworks); nil: the fixed range prefix.
	networks func(netip.Addr) netip.Prefix
	wmu      sync.Mutex // serializes writers, so a failure and a ban of one unit never interleave
}

// New returns a Core holding at most maxBans ban records and maxTracked
// failure trackers.
func New(p Policy, lists *Lists, maxBans, maxTracked int) *Core {
	c := &Core{policy: p, bans: NewBanTable(maxBans), fails: NewTracker(maxTracked, p.MaxFailures),
		ranges: newRangeTracker(maxBans), random: rand.Float64}
	if lists == nil {
		lists = NewLists(nil, nil, nil)
	}
	c.lists.Store(lists)
	return c
}

// SetRandom replaces the source of the ban jitter (tests).
func (c *Core) SetRandom(f func() float64) { c.random = f }

// Policy returns the policy the Core was built with.
func (c *Core) Policy() Policy { return c.policy }

// SetLists swaps in new lists; decisions in flight finish with the old ones.
func (c *Core) SetLists(l *Lists) { c.lists.Store(l) }

// Lists returns the lists in force.
func (c *Core) Lists() *Lists { return c.lists.Load() }

// Stats is a snapshot of the Core's sizes, for metrics and logs.
type Stats struct {
	ActiveBans int // ban records in force
	BanRecords int // ban records held, active or expired
	Tracked    int // units whose failures are tracked
	Allow      int // prefixes in the allow list
	Deny       int
	NeverBan   int
	Sourced    int // distinct prefixes of the deny sources (feeds, countries, networks)
}

// Stats returns the sizes at now. It changes nothing.
func (c *Core) Stats(now time.Time) Stats {
	s := Stats{ActiveBans: c.bans.ActiveCount(now), BanRecords: c.bans.Len(), Tracked: c.fails.Len()}
	l := c.lists.Load()
	s.Allow, s.Deny, s.NeverBan = l.Sizes()
	s.Sourced = l.Sourced()
	return s
}

// Clean unmaps an IPv4-mapped IPv6 address and drops any zone.
func Clean(a netip.Addr) netip.Addr {
	if a.Is4In6() {
		return a.Unmap()
	}
	if a.Zone() != "" {
		return a.WithZone("")
	}
	return a
}

// clean is Clean, then an address inside a NAT64 prefix becomes the IPv4
// address it embeds: behind a translator every IPv4 client shares the
// prefix, and one ban of its /64 would ban them all.
func (c *Core) clean(a netip.Addr) netip.Addr {
	a = Clean(a)
	if a.Is6() {
		for _, p := range c.policy.NAT64 {
			if p.Contains(a) {
				b := a.As16()
				return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
			}
		}
	}
	return a
}

// Addr is a as the Core judges it: unmapped, without a zone, and an address
// inside a NAT64 prefix translated to the IPv4 address it embeds.
func (c *Core) Addr(a netip.Addr) netip.Addr { return c.clean(a) }

// Unit returns the ban unit of a: the address itself for IPv4 at the default
// /32, its /64 for IPv6 at the default /64.
func (c *Core) Unit(a netip.Addr) netip.Prefix { return c.unit(c.clean(a)) }

// unit is Unit of a clean address.
func (c *Core) unit(a netip.Addr) netip.Prefix {
	bits := c.policy.IPv6Prefix
	if a.Is4() {
		bits = c.policy.IPv4Prefix
	}
	p, _ := a.Prefix(bits) // bits were validated against the family's length
	return p
}

// Decide returns the verdict for a at now: denylisted, then in a deny
// source (a feed, a denied country or network; never for a never-ban
// address), then outside the allow list (or the allowed countries), then
// banned, else allowed. It does not allocate.
func (c *Core) Decide(a netip.Addr, now time.Time) Verdict {
	a = c.clean(a)
	if !a.IsValid() {
		return Verdict{Reason: NoClientIP} // fail closed
	}
	l := c.lists.Load()
	if l.Denied(a) {
		return Verdict{Reason: Denylisted}
	}
	if r, src, ok := l.sourceDenied(a); ok {
		return Verdict{Reason: r, Source: src}
	}
	if l.NotAllowed(a) {
		return Verdict{Reason: l.notAllowed}
	}
	if key, r, ok := c.bans.lookup(a, c.unit(a), now.UnixNano()); ok && !l.NeverBan(a) {
		return Verdict{Reason: Banned, Key: key, Until: time.Unix(0, r.until).UTC()}
	}
	return Verdict{Allow: true, Reason: Allowed}
}

// FailResult is what one failure led to.
type FailResult struct {
	Addr     netip.Addr // the address, cleaned
	Key      netip.Prefix
	Failures int  // failures of Key within the window, this one included
	NeverBan bool // the address is in the never-ban list
	Banned   bool // this failure started a ban (of the unit, or of its range)
	// Ban is the ban in force for the address after this failure: the one it
	// started, or one that already covered it (its unit's or a range's).
	// Zero when none is.
	Ban Ban
	// Range is set when this failure's unit ban escalated to a range ban
	// (then Ban): Unit is the unit ban it made first, Folded the unit
	// records the range ban replaced.
	Range   bool
	Unit    Ban
	Folded  []Ban
	Evicted []Ban
	// Refused is set when the ban could not be held: the table is full of
	// active manual bans.
	Refused bool
	// TrackerEvicted is true when another unit's failures were forgotten to make room.
	TrackerEvicted bool
}

// InForce reports whether a ban covers the address after the failure.
func (r FailResult) InForce() bool { return r.Ban.Key.IsValid() }

// Fail records a failed login from a at now. When it is the MaxFailures-th
// within FindTime, the unit is banned before Fail returns: the next Decide,
// from any goroutine, denies it. A failure from an address a ban already
// covers adds no record: it is reported with that ban.
func (c *Core) Fail(a netip.Addr, now time.Time) FailResult {
	a = c.clean(a)
	key := c.unit(a)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	res := FailResult{Addr: a, Key: key, NeverBan: c.lists.Load().NeverBan(a)}
	if !res.NeverBan {
		if k, _, ok := c.bans.lookup(a, key, now.UnixNano()); ok {
			res.Ban, _ = c.bans.ban(k)
			res.Failures = c.fails.Count(key, now.UnixNano(), int64(c.policy.FindTime))
			return res
		}
	}
	res.Failures, res.TrackerEvicted = c.fails.Add(key, now.UnixNano(), int64(c.policy.FindTime))
	if res.Failures < c.policy.MaxFailures || res.NeverBan {
		return res
	}
	c.bans.prune(now)
	b := Ban{Key: key, Count: c.nextCount(key, now), Failures: res.Failures}
	b.Until = now.Add(c.length(b.Count))
	ev, err := c.bans.put(b, true, now)
	if err != nil {
		res.Refused = true
		return res
	}
	c.fails.Reset(key)
	res.Banned, res.Ban, res.Unit, res.Evicted = true, b, b, ev
	c.escalate(a, &res, now)
	return res
}

// Succeed records a successful login from a: its unit's failures are
// forgotten. An active ban stays. It returns the cleaned address and its unit.
func (c *Core) Succeed(a netip.Addr) (netip.Addr, netip.Prefix) {
	a = c.clean(a)
	key := c.unit(a)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.fails.Reset(key)
	return a, key
}

// Failures returns the failures counted for a's unit at now.
func (c *Core) Failures(a netip.Addr, now time.Time) int {
	return c.fails.Count(c.Unit(a), now.UnixNano(), int64(c.policy.FindTime))
}

// BanPrefix bans p for d (0: the policy's escalating ban time) at now, as an
// operator's manual ban. A single address is widened to its ban unit; a wider
// or narrower CIDR bans exactly that range. It returns the records evicted to
// make room; ErrTooWide or ErrTableFull change nothing.
func (c *Core) BanPrefix(p netip.Prefix, d time.Duration, note string, now time.Time) (Ban, []Ban, error) {
	p = c.Normalize(p)
	if tooWide(p) {
		return Ban{}, nil, ErrTooWide
	}
	unit := isUnit(p, c.policy.IPv4Prefix, c.policy.IPv6Prefix)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.bans.prune(now)
	b := Ban{Key: p, Manual: true, Note: note, Count: c.nextCount(p, now)}
	if d <= 0 {
		d = c.policy.Duration(b.Count)
	}
	b.Until = now.Add(d)
	ev, err := c.bans.put(b, unit, now)
	if err != nil {
		return Ban{}, nil, err
	}
	return b, ev, nil
}

// Apply stores b as it is, with no escalation: for bans loaded from the store
// or learned from other instances. It returns the records evicted to make
// room; ErrTooWide or ErrTableFull change nothing.
func (c *Core) Apply(b Ban, now time.Time) ([]Ban, error) {
	b.Key = c.Normalize(b.Key)
	if tooWide(b.Key) {
		return nil, ErrTooWide
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.bans.prune(now)
	return c.bans.put(b, isUnit(b.Key, c.policy.IPv4Prefix, c.policy.IPv6Prefix), now)
}

func tooWide(p netip.Prefix) bool {
	if p.Addr().Is4() {
		return p.Bits() < WidestIPv4
	}
	return p.Bits() < WidestIPv6
}

// Unban lifts the bans covering a (its unit's and every range containing it)
// and forgets its failures. It returns the bans lifted, active or expired.
func (c *Core) Unban(a netip.Addr) []Ban {
	a = c.clean(a)
	key := c.unit(a)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.fails.Reset(key)
	var out []Ban
	if b, ok := c.bans.remove(key); ok {
		out = append(out, b)
	}
	for _, k := range c.bans.covering(a) {
		if b, ok := c.bans.remove(k); ok {
			out = append(out, b)
		}
	}
	return out
}

// Remove deletes the record under exactly p, if any.
func (c *Core) Remove(p netip.Prefix) (Ban, bool) {
	p = c.Normalize(p)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.bans.remove(p)
}

// Record returns the record held under exactly p (a single address is widened
// to its ban unit), active or expired: for the cluster sync, which must tell a
// ban it already holds from a new one, and for the state file.
func (c *Core) Record(p netip.Prefix) (Ban, bool) { return c.bans.ban(c.Normalize(p)) }

// Bans returns the bans in force at now, soonest end first.
func (c *Core) Bans(now time.Time) []Ban { return c.bans.All(now, true) }

// Records returns every ban record held, expired ones included.
func (c *Core) Records(now time.Time) []Ban { return c.bans.All(now, false) }

// Normalize is the key a ban of p is held under: a single address is widened
// to its ban unit, an IPv4-mapped prefix is unmapped, host bits are cleared.
func (c *Core) Normalize(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	if p.Bits() == p.Addr().BitLen() {
		return c.unit(c.clean(p.Addr()))
	}
	return p.Masked()
}

// nextCount is the ban count for a new ban of key: one more than the last,
// when the last ended less than MaxBanTime ago; else 1.
func (c *Core) nextCount(key netip.Prefix, now time.Time) int {
	r, ok := c.bans.get(key)
	if !ok || now.UnixNano()-r.until > int64(c.policy.MaxBanTime) {
		return 1
	}
	return int(r.count) + 1
}

// length is the count-th ban's length with the policy's jitter added.
func (c *Core) length(count int) time.Duration {
	d := c.policy.Duration(count)
	if c.policy.Jitter > 0 {
		d += time.Duration(float64(d) * c.policy.Jitter * c.random())
	}
	return d
}

// Duration is the length of a unit's count-th ban: BanTime ×
// BanFactor^(count-1), capped at MaxBanTime. The cluster's Lua scripts apply
// the same rule; a shared table of cases tests both.
func (p Policy) Duration(count int) time.Duration {
	d := float64(p.BanTime) * math.Pow(p.BanFactor, float64(count-1))
	if d >= float64(p.MaxBanTime) || math.IsNaN(d) || math.IsInf(d, 0) {
		return p.MaxBanTime
	}
	return time.Duration(d)
}
