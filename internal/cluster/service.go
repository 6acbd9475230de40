package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// Fail implements engine.Backend: the failure is counted in Redis; the
// failure that reaches the threshold bans, there and here, before Fail returns.
func (c *Cluster) Fail(ctx context.Context, a netip.Addr, now time.Time) (decide.FailResult, engine.Change) {
	if !c.Up() {
		return c.localFail(ctx, a, now)
	}
	a = c.core.Addr(a)
	key := c.core.Unit(a)
	never := c.core.Lists().NeverBan(a)
	// Already banned here (possibly by a range Redis cannot match): count, do not ban again.
	v := c.core.Decide(a, now)
	hold := never || v.Reason == decide.Banned
	defer c.keyLock.lock(key)()
	p := c.policy
	member := c.id + ":" + strconv.FormatUint(c.seq.Add(1), 36)
	r, err := failScript.Run(ctx, c.rdb, c.keys.of(key),
		now.UnixMilli(), ms(p.FindTime), p.MaxFailures, member, flag(hold),
		ms(p.BanTime), p.BanFactor, ms(p.MaxBanTime), c.keys.channel(), key.String(), a.String(), c.id,
		1+p.Jitter*rand.Float64()).Int64Slice()
	if err != nil || len(r) != 5 {
		c.lost(fmt.Errorf("failure script: %w", errOr(err, len(r))))
		return c.localFail(ctx, a, now)
	}
	res := decide.FailResult{Addr: a, Key: key, Failures: int(r[0]), NeverBan: never}
	if v.Reason == decide.Banned && !never {
		res.Ban, _ = c.core.Record(v.Key)
	}
	ch := c.failed(ctx, &res, r, now)
	return res, ch
}

// failed puts in force the ban the failure script reported in r, if any,
// and returns the change the failure made here.
func (c *Cluster) failed(ctx context.Context, res *decide.FailResult, r []int64, now time.Time) engine.Change {
	ch := engine.Change{Source: engine.SourceFailures, IP: res.Addr.String(), Failure: true, Key: res.Key, Failures: res.Failures}
	key := res.Key
	if r[2] == 0 {
		if res.InForce() {
			ch.Saved = &res.Ban // on disk before the answer says banned
		}
		return ch
	}
	b := decide.Ban{Key: key, Until: time.UnixMilli(r[2]).UTC(), Count: int(r[3]), Failures: int(r[0]),
		Manual: r[4] == 1, Range: r[4] == 2}
	if r[1] == 0 {
		// Redis holds a ban of the unit this instance does not (evicted
		// here, or a message missed): in force here before the answer,
		// unless it has no reason or ends later than doorman makes bans.
		m := message{Op: "ban", Key: key.String(), Until: r[2]}
		m.setKind(strconv.FormatInt(r[4], 10))
		if !c.admit(m, now) {
			return ch
		}
		ev, err := c.core.Apply(b, now)
		if err != nil {
			return ch
		}
		res.Ban = b
		ch.Source, ch.Ban, ch.Evicted = engine.SourceCluster, &res.Ban, ev
		return ch
	}
	res.Banned, res.Ban, res.Unit = true, b, b
	var err error
	res.Evicted, err = c.core.Apply(b, now)
	if err != nil {
		res.Refused = true // full of manual bans here; Redis and the peers hold it
		ch.Refused = key
		return ch
	}
	// Range escalation: this instance learns every unit ban, so it counts
	// them per range; the range ban it makes is offered to Redis (the longer
	// ban wins there) and so reaches the peers.
	if er := c.core.Escalate(res.Addr, b, now); er.Range {
		res.Range, res.Ban, res.Folded = true, er.Ban, er.Folded
		res.Evicted = append(res.Evicted, er.Evicted...)
		if err := c.push(ctx, []decide.Ban{er.Ban}, now); err != nil {
			c.lost(err)
		}
	}
	ch.Ban, ch.Evicted, ch.Folded = &res.Ban, res.Evicted, res.Folded
	return ch
}

// Failures implements engine.Backend: the failure count is Redis's, which
// every instance adds to; the local count while Redis is unreachable.
func (c *Cluster) Failures(ctx context.Context, a netip.Addr, now time.Time) int {
	if c.Up() {
		min := strconv.FormatInt(now.Add(-c.policy.FindTime).UnixMilli()+1, 10)
		n, err := c.rdb.ZCount(ctx, c.keys.of(c.core.Unit(a))[keyFail], min, "+inf").Result()
		if err == nil {
			return int(n)
		}
	}
	return c.mem.Failures(ctx, a, now)
}

// notShared marks ch as made while Redis was unreachable: it is pushed when
// Redis is back.
func (c *Cluster) notShared(ch *engine.Change) {
	c.dirty.Store(true)
	ch.Reports.Report(engine.ReportShared, false)
}

func (c *Cluster) localFail(ctx context.Context, a netip.Addr, now time.Time) (decide.FailResult, engine.Change) {
	res, ch := c.mem.Fail(ctx, a, now)
	if res.Banned {
		c.notShared(&ch)
	}
	return res, ch
}

// Succeed implements engine.Backend: the unit's failures are forgotten here
// and in Redis. A Redis error is not the app's problem: the count expires
// after the find time anyway.
func (c *Cluster) Succeed(ctx context.Context, a netip.Addr, now time.Time) (netip.Addr, netip.Prefix) {
	a, key := c.mem.Succeed(ctx, a, now)
	if !c.Up() {
		return a, key
	}
	msg, _ := jsonMessage(message{Op: "success", Key: key.String(), IP: a.String(), Origin: c.id})
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, c.keys.of(key)[keyFail])
		p.Publish(ctx, c.keys.channel(), msg)
		return nil
	})
	if err != nil {
		c.lost(fmt.Errorf("success: %w", err))
	}
	return a, key
}

// Ban implements engine.Backend: a manual ban, stored in Redis with its
// escalation count, then here.
func (c *Cluster) Ban(ctx context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (decide.Ban, engine.Change, error) {
	if !c.Up() {
		return c.localBan(ctx, p, d, note, now)
	}
	key := c.core.Normalize(p)
	defer c.keyLock.lock(key)()
	ip := engine.IP(p)
	pol := c.policy
	dms := int64(0)
	if d > 0 {
		dms = max(ms(d), 1)
	}
	r, err := banScript.Run(ctx, c.rdb, c.keys.of(key),
		now.UnixMilli(), dms, ms(pol.BanTime), pol.BanFactor, ms(pol.MaxBanTime), note,
		c.keys.channel(), key.String(), ip, c.id).Int64Slice()
	if err != nil || len(r) != 2 {
		c.lost(fmt.Errorf("ban script: %w", errOr(err, len(r))))
		return c.localBan(ctx, p, d, note, now)
	}
	b := decide.Ban{Key: key, Until: time.UnixMilli(r[0]).UTC(), Manual: true, Note: note, Count: int(r[1])}
	evicted, err := c.core.Apply(b, now)
	if err != nil {
		// The range table is full here: take the ban back from Redis too.
		c.unbanKeys(ctx, []netip.Prefix{key}, nil, ip, now)
		return decide.Ban{}, engine.Change{}, err
	}
	return b, engine.Change{Source: engine.SourceManual, IP: ip, Ban: &b, Evicted: evicted}, nil
}

func (c *Cluster) localBan(ctx context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (decide.Ban, engine.Change, error) {
	b, ch, err := c.mem.Ban(ctx, p, d, note, now)
	if err == nil {
		c.notShared(&ch)
	}
	return b, ch, err
}

// Unban implements engine.Backend: the bans covering a (its unit's, and the
// ranges this instance knows to contain it) are lifted here, then in Redis.
func (c *Cluster) Unban(ctx context.Context, a netip.Addr, now time.Time) engine.Change {
	unit := c.core.Unit(a)
	defer c.keyLock.lock(unit)() // ranges lifted here are not locked: they are rare and manual
	ch := c.mem.Unban(ctx, a, now)
	keys := []netip.Prefix{unit}
	here := map[netip.Prefix]decide.Ban{}
	for _, b := range ch.Lifted {
		here[b.Key] = b
		if b.Key != unit {
			keys = append(keys, b.Key)
		}
	}
	extra, shared := c.unbanKeys(ctx, keys, here, ch.IP, now)
	ch.Lifted = append(ch.Lifted, extra...)
	if !shared && len(ch.Lifted) > 0 {
		c.notShared(&ch)
	}
	return ch
}

// Remove implements engine.Backend: the ban under exactly p is lifted here,
// then in Redis.
func (c *Cluster) Remove(ctx context.Context, p netip.Prefix, now time.Time) engine.Change {
	key := c.core.Normalize(p)
	defer c.keyLock.lock(key)()
	ch := c.mem.Remove(ctx, key, now)
	ch.IP = engine.IP(p)
	here := map[netip.Prefix]decide.Ban{}
	for _, b := range ch.Lifted {
		here[key] = b
	}
	more, shared := c.unbanKeys(ctx, []netip.Prefix{key}, here, engine.IP(p), now)
	if len(more) > 0 && len(ch.Lifted) == 0 {
		ch.Lifted = more[:1]
	}
	if !shared && len(ch.Lifted) > 0 {
		c.notShared(&ch)
	}
	return ch
}

// unbanKeys lifts the bans under keys in Redis; here holds those already
// lifted in memory. It returns the bans Redis held that this instance did
// not, and false when Redis was unreachable: the keys lifted here are then
// queued for later.
func (c *Cluster) unbanKeys(ctx context.Context, keys []netip.Prefix, here map[netip.Prefix]decide.Ban, ip string, now time.Time) ([]decide.Ban, bool) {
	var extra []decide.Ban
	for i, k := range keys {
		if c.Up() {
			lu := int64(0)
			if b, ok := here[k]; ok {
				lu = b.Until.UnixMilli()
			}
			h, err := unbanScript.Run(ctx, c.rdb, c.keys.of(k),
				now.UnixMilli(), -1, lu, c.keys.channel(), k.String(), ip, c.id).StringSlice()
			if err == nil {
				if b, ok := banHash(h).ban(k); ok {
					if _, had := here[k]; !had {
						extra = append(extra, b)
					}
				}
				continue
			}
			c.lost(fmt.Errorf("unban script: %w", err))
		}
		for _, k := range keys[i:] {
			if b, ok := here[k]; ok { // nothing lifted here: nothing to replay
				c.outbox.put(k, pendingUnban{until: b.Until, at: now, ip: ip})
			}
		}
		c.dirty.Store(true)
		return extra, false
	}
	return extra, true
}

var _ engine.Backend = (*Cluster)(nil)
