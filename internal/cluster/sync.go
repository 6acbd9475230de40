package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/decide"
)

// message is what the scripts publish on the channel.
type message struct {
	Op       string `json:"op"` // ban, unban or success
	Key      string `json:"key"`
	IP       string `json:"ip"`
	Until    int64  `json:"until,omitempty"` // ms since the epoch
	Count    int    `json:"count,omitempty"`
	Failures int    `json:"failures,omitempty"`
	Manual   bool   `json:"manual,omitempty"`
	Note     string `json:"note,omitempty"`
	Origin   string `json:"origin"`
}

func jsonMessage(m message) (string, error) {
	b, err := json.Marshal(m)
	return string(b), err
}

// job is the logging and state-file work for a change learned from the
// cluster. It runs off the sync loop, so a slow disk never delays applying the
// next change to the Core; jobs of one key run in order.
type job struct {
	ban     bool
	b       decide.Ban
	ip      string
	evicted []decide.Ban
}

const (
	numWorkers = 8
	maxBatch   = 1024 // jobs a worker persists together
	maxBackoff = 2 * time.Second
	scanCount  = 1000
)

var shardSeed = maphash.MakeSeed()

// jobQueue is a FIFO that never blocks the sender: a full sync applies 100k
// bans to the Core in a second or two, and their state-file writes follow at
// the disk's pace. It holds at most one entry per change not yet written.
type jobQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	jobs   []job
	closed bool
}

func (q *jobQueue) push(j job) {
	q.mu.Lock()
	q.jobs = append(q.jobs, j)
	q.mu.Unlock()
	q.cond.Signal()
}

// take waits for jobs and returns up to max of them; nil once closed and empty.
func (q *jobQueue) take(max int) []job {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.jobs) == 0 && !q.closed {
		q.cond.Wait()
	}
	n := min(len(q.jobs), max)
	out := append([]job(nil), q.jobs[:n]...)
	q.jobs = q.jobs[n:]
	if len(q.jobs) == 0 {
		q.jobs = nil // let a drained backlog's array go
	}
	return out
}

func (q *jobQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

func (c *Cluster) startWorkers() {
	c.workers = make([]*jobQueue, numWorkers)
	for i := range c.workers {
		q := &jobQueue{}
		q.cond.L = &q.mu
		c.workers[i] = q
		c.wg.Go(func() {
			for batch := q.take(maxBatch); batch != nil; batch = q.take(maxBatch) {
				c.persist(batch)
			}
		})
	}
}

// persist runs a batch of jobs concurrently, so that the state file commits
// them in few transactions (a full sync can bring 100k bans), in waves that
// hold at most one job per key, so those of one key keep their order.
func (c *Cluster) persist(batch []job) {
	for len(batch) > 0 {
		seen := make(map[netip.Prefix]bool, len(batch))
		var wave, rest []job
		for _, j := range batch {
			if seen[j.b.Key] {
				rest = append(rest, j)
				continue
			}
			seen[j.b.Key] = true
			wave = append(wave, j)
		}
		var wg sync.WaitGroup
		for _, j := range wave {
			wg.Go(func() {
				now := c.now()
				if j.ban {
					c.local.LogBan(j.ip, j.b, now, "cluster")
					c.local.Recorded(j.b, j.evicted, now) // an error is logged and counted there
				} else {
					c.local.Forgotten(j.ip, []decide.Ban{j.b}, now, "cluster")
				}
			})
		}
		wg.Wait()
		batch = rest
	}
}

func (c *Cluster) enqueue(j job) {
	c.workers[maphash.Comparable(shardSeed, j.b.Key)%numWorkers].push(j)
}

// Run keeps this instance in step with Redis until ctx ends: it subscribes to
// the channel, loads the full ban set and reconciles on every (re)connect,
// applies the changes peers publish, and pushes what was changed locally
// while Redis was unreachable. On return the pending state-file writes are
// done and the client is closed.
func (c *Cluster) Run(ctx context.Context) {
	c.startWorkers()
	defer func() {
		for _, q := range c.workers {
			q.close()
		}
		c.wg.Wait()
		c.rdb.Close()
	}()
	var mu sync.Mutex
	ps := c.rdb.Subscribe(ctx, c.events)
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
			ps = c.rdb.Subscribe(ctx, c.events)
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
	c.setState(stateUp, nil)
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// handle applies one change published by a peer.
func (c *Cluster) handle(payload string) {
	var m message
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		c.log.Warn("ignored malformed message", "err", err)
		return
	}
	if m.Origin == c.id {
		return // applied before it was published
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
		c.learn(m.IP, decide.Ban{Key: key, Until: time.UnixMilli(m.Until).UTC(), Manual: m.Manual,
			Note: m.Note, Count: m.Count, Failures: m.Failures})
	case "unban":
		defer c.lockKey(key)()
		if b, ok := c.core.Remove(key); ok {
			c.enqueue(job{b: b, ip: m.IP})
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

// learn applies a ban held in Redis, unless this instance holds it or a
// longer one under the same key.
func (c *Cluster) learn(ip string, b decide.Ban) {
	defer c.lockKey(b.Key)()
	if old, ok := c.core.Record(b.Key); ok && !old.Until.Before(b.Until) {
		return
	}
	if ip == "" {
		ip = b.Key.Addr().String()
	}
	ev := c.core.Apply(b)
	if _, ok := c.core.Record(b.Key); !ok {
		// Only a range ban can be refused: the range table is full.
		c.log.Warn("ban from the cluster not applied: range table full (DOORMAN_MAX_BANS)", "key", b.Key.String())
		return
	}
	c.enqueue(job{ban: true, b: b, ip: ip, evicted: ev})
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
	err := c.scanBans(ctx, func(key netip.Prefix, h []string) {
		b, ok := parseHash(key, h)
		if !ok {
			return
		}
		remote[key] = b.Until
		if b.Active(now) {
			c.learn(hashIP(h), b)
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
	return c.push(ctx, push, now)
}

// replayUnbans runs the unbans queued while Redis was unreachable. A ban made
// in Redis after the unban stays.
func (c *Cluster) replayUnbans(ctx context.Context) error {
	c.pendMu.Lock()
	queued := c.pending
	c.pending = map[netip.Prefix]pendingUnban{}
	c.pendMu.Unlock()
	if len(queued) == 0 {
		return nil
	}
	now := c.now()
	done := 0
	var err error
	for k, p := range queued {
		err = unbanScript.Run(ctx, c.rdb,
			[]string{c.key("ban", k), c.key("count", k), c.key("unban", k), c.key("fail", k)},
			now.UnixMilli(), p.at.UnixMilli(), p.until.UnixMilli(), c.events, k.String(), p.ip, c.id).Err()
		if err != nil {
			break
		}
		delete(queued, k)
		done++
	}
	if len(queued) > 0 { // put back what was not replayed, unless lifted again meanwhile
		c.pendMu.Lock()
		for k, p := range queued {
			if _, ok := c.pending[k]; !ok {
				c.pending[k] = p
			}
		}
		c.pendMu.Unlock()
	}
	if done > 0 {
		c.log.Info("unbans made during the outage replayed", "count", done)
	}
	if err != nil {
		return fmt.Errorf("replaying unbans: %w", err)
	}
	return nil
}

// scanBans calls fn for every ban hash in Redis (every master of a Cluster).
func (c *Cluster) scanBans(ctx context.Context, fn func(netip.Prefix, []string)) error {
	pattern := globEscape(c.prefix) + "ban:{*"
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
					key, ok := c.keyOf(keys[i])
					if !ok {
						continue
					}
					m := cmd.(*redis.MapStringStringCmd).Val()
					h := make([]string, 0, 2*len(m))
					for f, v := range m {
						h = append(h, f, v)
					}
					fn(key, h)
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
		fn = func(k netip.Prefix, h []string) { mu.Lock(); defer mu.Unlock(); inner(k, h) }
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
				pushScript.EvalSha(ctx, p,
					[]string{c.key("ban", b.Key), c.key("count", b.Key), c.key("unban", b.Key)},
					now.UnixMilli(), b.Until.UnixMilli(), max(b.Count, 1), b.Failures, flag(b.Manual), b.Note,
					ms(c.policy.MaxBanTime), c.events, b.Key.String(), b.Key.Addr().String(), c.id)
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
					c.enqueue(job{b: b, ip: b.Key.Addr().String()})
				}
			}
		}
	}
	return nil
}

// globEscape escapes the glob characters of a SCAN MATCH pattern.
func globEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `?`, `\?`, `[`, `\[`, `]`, `\]`, `*`, `\*`)
	return r.Replace(s)
}
