package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

const (
	maxBackoff = 2 * time.Second // between reconnects
	scanCount  = 1000            // keys per SCAN and bans per push pipeline
)

// Run keeps this instance in step with Redis until ctx ends: it subscribes to
// the channel, loads the full ban set and reconciles on every (re)connect,
// applies the changes peers publish, and pushes what was changed locally
// while Redis was unreachable. On return the pending state-file writes are
// done and the client is closed.
func (c *Cluster) Run(ctx context.Context) {
	c.writer.start()
	defer func() {
		c.writer.stop()
		c.rdb.Close()
	}()
	var mu sync.Mutex
	ps := c.rdb.Subscribe(ctx, c.keys.channel())
	stop := context.AfterFunc(ctx, func() { // unblock a read in progress
		mu.Lock()
		ps.Close()
		mu.Unlock()
	})
	defer stop()
	defer func() { mu.Lock(); ps.Close(); mu.Unlock() }()

	backoff := 50 * time.Millisecond
	synced := false // this connection has been reconciled
	lastHeard, lastTick := time.Now(), time.Now()
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, c.tick)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			backoff, lastHeard = 50*time.Millisecond, time.Now()
			switch m := msg.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" { // a new connection: catch up
					// Messages queued during the sync may predate what it
					// read; a second pass a tick later, once they are
					// applied, settles them.
					synced = c.sync(ctx)
					c.dirty.Store(true)
					lastTick = time.Now()
				}
			case *redis.Message:
				c.handle(m.Payload)
			}
		case !isTimeout(err):
			synced = false
			c.setState(stateDown, err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		if time.Since(lastTick) < c.tick {
			continue
		}
		lastTick = time.Now()
		if quiet := time.Since(lastHeard); quiet > 3*c.tick {
			// The pings went unanswered: a dead connection TCP has not noticed.
			c.setState(stateDown, errStalled)
			mu.Lock()
			ps.Close()
			ps = c.rdb.Subscribe(ctx, c.keys.channel())
			mu.Unlock()
			synced, lastHeard = false, time.Now()
			continue
		} else if quiet >= c.tick {
			ps.Ping(ctx)
		}
		if !synced || c.dirty.Load() || !c.Up() {
			synced = c.sync(ctx)
		}
	}
}

// sync reconciles and marks Redis up, or down on error. It reports success.
func (c *Cluster) sync(ctx context.Context) bool {
	c.dirty.Store(false)
	if err := c.reconcile(ctx); err != nil {
		c.dirty.Store(true)
		if ctx.Err() == nil {
			c.errors.Inc()
			c.setState(stateDown, err)
		}
		return false
	}
	c.lastSync.Store(c.now().UnixNano())
	c.setState(stateUp, nil)
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// handle applies one change published by a peer.
func (c *Cluster) handle(payload string) {
	now := c.now()
	var m message
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		c.refuse(refuseMalformed, m, now)
		return
	}
	if m.Origin == c.id {
		return // applied before it was published
	}
	if !c.admit(m, now) {
		return
	}
	if a := c.accounts.Load(); a != nil && a.handle(m) {
		return
	}
	key, err := netip.ParsePrefix(m.Key)
	if err != nil {
		c.log.Warn("ignored message with a bad key", "key", m.Key)
		return
	}
	if ctr := c.received[m.Op]; ctr != nil {
		ctr.Inc()
	}
	switch m.Op {
	case "ban":
		c.learn(m.IP, m.ban(key))
	case "unban":
		defer c.keyLock.lock(key)()
		if b, ok := c.core.Remove(key); ok {
			c.writer.enqueue(unbanJob(m.IP, b))
		}
		if a, err := netip.ParseAddr(m.IP); err == nil {
			c.core.Succeed(a) // an unban clears the unit's failures
		}
	case "success":
		if a, err := netip.ParseAddr(m.IP); err == nil {
			c.core.Succeed(a)
		}
	}
}

// learn applies a ban held in Redis (vetted: see admit), unless this
// instance holds it or a longer one under the same key.
func (c *Cluster) learn(ip string, b decide.Ban) {
	defer c.keyLock.lock(b.Key)()
	if old, ok := c.core.Record(b.Key); ok && !old.Until.Before(b.Until) {
		return
	}
	if ip == "" {
		ip = b.Key.Addr().String()
	}
	ev, err := c.core.Apply(b, c.now())
	if err != nil {
		// The table is full of active manual bans (vet refused the rest).
		kind := refuseFull
		if errors.Is(err, decide.ErrTooWide) {
			kind = refuseWide
		}
		c.refuse(kind, message{Op: "ban", Key: b.Key.String(), Until: b.Until.UnixMilli()}, c.now())
		return
	}
	c.writer.enqueue(banJob(ip, b, ev))
	// Peers' unit bans count toward their range here too.
	if er := c.core.Escalate(b.Key.Addr(), b, c.now()); er.Range {
		c.writer.enqueue(banJob(engine.IP(er.Ban.Key), er.Ban, append(er.Evicted, er.Folded...)))
		if err := c.push(context.Background(), []decide.Ban{er.Ban}, c.now()); err != nil {
			c.lost(err)
		}
	}
}

// reconcile makes this instance and Redis agree: unbans queued during an
// outage are replayed, every ban in Redis is loaded here, and every ban held
// here that Redis lacks (made during an outage, or lost by a Redis restart)
// is pushed, unless a tombstone says it was lifted meanwhile.
func (c *Cluster) reconcile(ctx context.Context) error {
	for _, s := range scripts {
		if err := s.Load(ctx, c.rdb).Err(); err != nil { // a restarted Redis forgot them
			return fmt.Errorf("loading scripts: %w", err)
		}
	}
	if err := c.replayUnbans(ctx); err != nil {
		return err
	}
	now := c.now()
	remote := map[netip.Prefix]time.Time{}
	err := c.scanBans(ctx, func(key netip.Prefix, h banHash) {
		m, ok := h.message(key)
		if !ok {
			return
		}
		remote[key] = time.UnixMilli(m.Until)
		if m.Until > now.UnixMilli() && c.admit(m, now) {
			c.learn(m.IP, m.ban(key))
		}
	})
	if err != nil {
		return fmt.Errorf("loading bans: %w", err)
	}
	var push []decide.Ban
	for _, b := range c.core.Bans(now) {
		if u, ok := remote[b.Key]; !ok || b.Until.After(u) {
			push = append(push, b)
		}
	}
	if err := c.push(ctx, push, now); err != nil {
		return err
	}
	if a := c.accounts.Load(); a != nil {
		return a.reconcile(ctx, now)
	}
	return nil
}

// replayUnbans runs the unbans queued while Redis was unreachable. A ban made
// in Redis after the unban stays.
func (c *Cluster) replayUnbans(ctx context.Context) error {
	now := c.now()
	done, err := c.outbox.replay(ctx, func(k netip.Prefix, p pendingUnban) error {
		return unbanScript.Run(ctx, c.rdb, c.keys.of(k),
			now.UnixMilli(), p.at.UnixMilli(), p.until.UnixMilli(), c.keys.channel(), k.String(), p.ip, c.id).Err()
	})
	if done > 0 {
		c.log.Info("unbans made during the outage replayed", "count", done)
	}
	if err != nil {
		return fmt.Errorf("replaying unbans: %w", err)
	}
	return nil
}

// scanBans calls fn for every ban hash in Redis (every master of a Cluster).
func (c *Cluster) scanBans(ctx context.Context, fn func(netip.Prefix, banHash)) error {
	return c.scanHashes(ctx, c.keys.banPattern(), func(redisKey string, h banHash) {
		if key, ok := c.keys.parse(redisKey); ok {
			fn(key, h)
		}
	})
}

// scanHashes calls fn for every hash whose key matches pattern, on every
// master of a Cluster, one call at a time.
func (c *Cluster) scanHashes(ctx context.Context, pattern string, fn func(string, banHash)) error {
	scan := func(ctx context.Context, rdb redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := rdb.Scan(ctx, cursor, pattern, scanCount).Result()
			if err != nil {
				return err
			}
			if len(keys) > 0 {
				cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
					for _, k := range keys {
						p.HGetAll(ctx, k)
					}
					return nil
				})
				if err != nil && !errors.Is(err, redis.Nil) {
					return err
				}
				for i, cmd := range cmds {
					m := cmd.(*redis.MapStringStringCmd).Val()
					h := make(banHash, 0, 2*len(m))
					for f, v := range m {
						h = append(h, f, v)
					}
					fn(keys[i], h)
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		// ForEachMaster scans the masters concurrently; fn is not meant to be.
		var mu sync.Mutex
		inner := fn
		fn = func(k string, h banHash) { mu.Lock(); defer mu.Unlock(); inner(k, h) }
		return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return scan(ctx, node) })
	}
	return scan(ctx, c.rdb)
}

// push offers bans held here to Redis, in pipelines; a ban lifted meanwhile
// (tombstone) is dropped here.
func (c *Cluster) push(ctx context.Context, bans []decide.Ban, now time.Time) error {
	for len(bans) > 0 {
		batch := bans[:min(len(bans), scanCount)]
		bans = bans[len(batch):]
		cmds, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, b := range batch {
				pushScript.EvalSha(ctx, p, c.keys.of(b.Key),
					now.UnixMilli(), b.Until.UnixMilli(), max(b.Count, 1), b.Failures, kind(b), b.Note,
					ms(c.policy.MaxBanTime), c.keys.channel(), b.Key.String(), engine.IP(b.Key), c.id)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("pushing bans: %w", err)
		}
		for i, cmd := range cmds {
			switch n, _ := cmd.(*redis.Cmd).Int64(); n {
			case 1:
				c.pushed.Inc()
			case -1: // lifted elsewhere while this instance could not hear it
				if b, ok := c.core.Remove(batch[i].Key); ok {
					c.writer.enqueue(unbanJob(engine.IP(b.Key), b))
				}
			}
		}
	}
	return nil
}
