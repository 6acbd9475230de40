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

// Decide implements engine.Service: from memory only, never Redis.
func (c *Cluster) Decide(a netip.Addr, now time.Time) decide.Verdict { return c.local.Decide(a, now) }

// Bans implements engine.Service.
func (c *Cluster) Bans(now time.Time) []decide.Ban { return c.local.Bans(now) }

// Stats implements engine.Service.
func (c *Cluster) Stats(now time.Time) decide.Stats { return c.local.Stats(now) }

// Fail implements engine.Service: the failure is counted in Redis; the
// failure that reaches the threshold bans, there and here, before Fail returns.
func (c *Cluster) Fail(ctx context.Context, a netip.Addr, now time.Time) (engine.Failed, error) {
	if !c.Up() {
		return c.localFail(ctx, a, now)
	}
	a = c.local.Addr(a)
	key := c.local.Unit(a)
	never := c.local.NeverBan(a)
	// Already banned here (possibly by a range Redis cannot match): count, do not ban again.
	v := c.local.Decide(a, now)
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
		res.Ban, _ = c.local.Record(v.Key)
	}
	ch := c.failed(ctx, &res, r, now)
	rc, err := c.local.Commit(ctx, ch, now)
	return engine.Failed{FailResult: res, Receipt: rc}, err
}

// failed puts in force the ban the failure script reported in r, if any,
// and returns the change the failure made here.
func (c *Cluster) failed(ctx context.Context, res *decide.FailResult, r []int64, now time.Time) engine.Change {
	ch := engine.Change{Source: engine.SourceFailures, IP: res.Addr.String(), Failure: true}
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
		ev, err := c.local.Apply(b, now)
		if err != nil {
			return ch
		}
		res.Ban = b
		ch.Source, ch.Ban, ch.Evicted = engine.SourceCluster, &res.Ban, ev
		return ch
	}
	res.Banned, res.Ban, res.Unit = true, b, b
	var err error
	res.Evicted, err = c.local.Apply(b, now)
	if err != nil {
		res.Refused = true // full of manual bans here; Redis and the peers hold it
		ch.Refused = key
		return ch
	}
	// Range escalation: this instance learns every unit ban, so it counts
	// them per range; the range ban it makes is offered to Redis (the longer
	// ban wins there) and so reaches the peers.
	if er := c.local.Escalate(res.Addr, b, now); er.Range {
		res.Range, res.Ban, res.Folded = true, er.Ban, er.Folded
		res.Evicted = append(res.Evicted, er.Evicted...)
		if err := c.push(ctx, []decide.Ban{er.Ban}, now); err != nil {
			c.lost(err)
		}
	}
	ch.Ban, ch.Evicted, ch.Folded = &res.Ban, res.Evicted, res.Folded
	return ch
}

// Explain implements engine.Service: the failure count is Redis's, which
// every instance adds to; the local count while Redis is unreachable.
func (c *Cluster) Explain(ctx context.Context, a netip.Addr, now time.Time) engine.Explanation {
	e := c.local.Explain(ctx, a, now)
	if !c.Up() {
		return e
	}
	min := strconv.FormatInt(now.Add(-c.policy.FindTime).UnixMilli()+1, 10)
	n, err := c.rdb.ZCount(ctx, c.keys.of(c.local.Unit(a))[keyFail], min, "+inf").Result()
	if err == nil {
		e.Failures = int(n)
	}
	return e
}

func (c *Cluster) localFail(ctx context.Context, a netip.Addr, now time.Time) (engine.Failed, error) {
	res, err := c.local.Fail(ctx, a, now)
	if res.Banned {
		c.dirty.Store(true)
		res.Report(engine.ReportShared, false) // pushed when Redis is back
	}
	return res, err
}

// Succeed implements engine.Service: the unit's failures are forgotten here
// and in Redis. A Redis error is not the app's problem: the count expires
// after the find time anyway.
func (c *Cluster) Succeed(ctx context.Context, a netip.Addr, now time.Time) (netip.Addr, netip.Prefix, error) {
	a, key, err := c.local.Succeed(ctx, a, now)
	if err != nil || !c.Up() {
		return a, key, err
	}
	msg, _ := jsonMessage(message{Op: "success", Key: key.String(), IP: a.String(), Origin: c.id})
	_, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, c.keys.of(key)[keyFail])
		p.Publish(ctx, c.keys.channel(), msg)
		return nil
	})
	if err != nil {
		c.lost(fmt.Errorf("success: %w", err))
	}
	return a, key, nil
}

// Ban implements engine.Service: a manual ban, stored in Redis with its
// escalation count, then here.
func (c *Cluster) Ban(ctx context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (engine.Banned, error) {
	if !c.Up() {
		return c.localBan(ctx, p, d, note, now)
	}
	key := c.local.Normalize(p)
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
	evicted, err := c.local.Apply(b, now)
	if err != nil {
		// The range table is full here: take the ban back from Redis too.
		c.unbanKeys(ctx, []netip.Prefix{key}, nil, ip, now)
		return engine.Banned{}, err
	}
	rc, err := c.local.Commit(ctx, engine.Change{Source: engine.SourceManual, IP: ip, Ban: &b, Evicted: evicted}, now)
	return engine.Banned{Ban: b, Receipt: rc}, err
}

func (c *Cluster) localBan(ctx context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (engine.Banned, error) {
	b, err := c.local.Ban(ctx, p, d, note, now)
	if err == nil || b.Key.IsValid() {
		c.dirty.Store(true)
		b.Report(engine.ReportShared, false) // pushed when Redis is back
	}
	return b, err
}

// Unban implements engine.Service: the bans covering a (its unit's, and the
// ranges this instance knows to contain it) are lifted here, then in Redis.
func (c *Cluster) Unban(ctx context.Context, a netip.Addr, now time.Time) (engine.Lifted, error) {
	unit := c.local.Unit(a)
	defer c.keyLock.lock(unit)() // ranges lifted here are not locked: they are rare and manual
	a, lifted := c.local.Lift(a)
	keys := []netip.Prefix{unit}
	here := map[netip.Prefix]decide.Ban{}
	for _, b := range lifted {
		here[b.Key] = b
		if b.Key != unit {
			keys = append(keys, b.Key)
		}
	}
	extra, shared := c.unbanKeys(ctx, keys, here, a.String(), now)
	lifted = append(lifted, extra...)
	rc, err := c.local.Commit(ctx, engine.Change{Source: engine.SourceManual, IP: a.String(), Lifted: lifted}, now)
	reportShared(&rc, lifted, shared)
	return engine.Lifted{Bans: lifted, Receipt: rc}, err
}

// Remove implements engine.Service: the ban under exactly p is lifted here,
// then in Redis.
func (c *Cluster) Remove(ctx context.Context, p netip.Prefix, now time.Time) (engine.Lifted, error) {
	key := c.local.Normalize(p)
	defer c.keyLock.lock(key)()
	here := map[netip.Prefix]decide.Ban{}
	b, ok := c.local.Take(key)
	if ok {
		here[key] = b
	}
	more, shared := c.unbanKeys(ctx, []netip.Prefix{key}, here, engine.IP(p), now)
	if len(more) > 0 && !ok {
		b, ok = more[0], true
	}
	if !ok {
		return engine.Lifted{}, nil
	}
	lifted := []decide.Ban{b}
	rc, err := c.local.Commit(ctx, engine.Change{Source: engine.SourceManual, IP: engine.IP(p), Lifted: lifted}, now)
	reportShared(&rc, lifted, shared)
	return engine.Lifted{Bans: lifted, Receipt: rc}, err
}

// reportShared says in rc that the unbans of lifted are not shared yet,
// when they were queued.
func reportShared(rc *engine.Receipt, lifted []decide.Ban, shared bool) {
	if !shared && len(lifted) > 0 {
		rc.Report(engine.ReportShared, false)
	}
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
