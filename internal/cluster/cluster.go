package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/server"
)

// Options configure New.
type Options struct {
	URL    string        // DOORMAN_REDIS_URL
	Prefix string        // DOORMAN_REDIS_PREFIX; "doorman:" when empty
	Local  *server.Local // this instance's Core, state file, log and metrics
	Now    func() time.Time
	// Tick is how often the sync loop checks the connection and pushes
	// changes made while Redis was unreachable; 0 means 1 s.
	Tick time.Duration
}

// Cluster is the server.Backend of cluster mode.
type Cluster struct {
	local  *server.Local
	core   *decide.Core
	policy decide.Policy
	rdb    redis.UniversalClient
	prefix string
	events string // the pub/sub channel
	id     string // tags this instance's messages, so it skips its own
	log    *slog.Logger
	now    func() time.Time
	tick   time.Duration

	state atomic.Int32 // stateUnknown, stateUp or stateDown
	dirty atomic.Bool  // local changes await a push to Redis
	seq   atomic.Uint64

	pendMu  sync.Mutex
	pending map[netip.Prefix]pendingUnban // unbans made while Redis was unreachable

	workers []*jobQueue
	wg      sync.WaitGroup

	// keyLocks serialize, per ban key, an API call (Redis, then the Core and
	// the state file) with the sync loop applying a peer's change to that key,
	// so a peer's unban published right after this instance's ban is never
	// applied before the ban itself.
	keyLocks [64]sync.Mutex

	reconnects *metrics.Counter
	errors     *metrics.Counter
	pushed     *metrics.Counter
	received   map[string]*metrics.Counter
}

const (
	stateUnknown int32 = iota
	stateUp
	stateDown
)

// maxPending bounds the unbans queued during an outage; past it the oldest
// is dropped (and logged): its ban may come back from another instance.
const maxPending = 100_000

type pendingUnban struct {
	until time.Time // of the ban lifted locally
	at    time.Time // when it was lifted
	ip    string
}

// New builds the cluster backend. It does not dial: Run connects, and until
// it has, the API falls back to the local backend.
func New(o Options) (*Cluster, error) {
	rdb, err := NewClient(o.URL)
	if err != nil {
		return nil, err
	}
	if o.Prefix == "" {
		o.Prefix = "doorman:"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	var id [8]byte
	rand.Read(id[:])
	l := o.Local
	c := &Cluster{
		local: l, core: l.Core, policy: l.Core.Policy(), rdb: rdb,
		prefix: o.Prefix, events: o.Prefix + "events", id: hex.EncodeToString(id[:]),
		log: l.Log.With("component", "cluster"), now: o.Now, tick: o.Tick,
		pending: map[netip.Prefix]pendingUnban{},
	}
	// go-redis logs through a package-level logger: set once, to the first
	// cluster's log (a doorman runs one).
	setLogger.Do(func() { redis.SetLogger(redisLogger{c.log}) })
	s := l.Metrics.Set()
	s.NewGauge("doorman_redis_up", func() float64 {
		if c.state.Load() == stateUp {
			return 1
		}
		return 0
	})
	c.reconnects = s.NewCounter("doorman_redis_reconnects_total")
	c.errors = s.NewCounter("doorman_redis_errors_total")
	c.pushed = s.NewCounter("doorman_cluster_pushed_total")
	c.received = map[string]*metrics.Counter{}
	for _, op := range []string{"ban", "unban", "success"} {
		c.received[op] = s.NewCounter(`doorman_cluster_received_total{op="` + op + `"}`)
	}
	s.NewGauge("doorman_cluster_pending_unbans", func() float64 {
		c.pendMu.Lock()
		defer c.pendMu.Unlock()
		return float64(len(c.pending))
	})
	return c, nil
}

// Up reports whether Redis is reachable and this instance is in sync with it.
func (c *Cluster) Up() bool { return c.state.Load() == stateUp }

func (c *Cluster) key(kind string, k netip.Prefix) string {
	return c.prefix + kind + ":{" + k.String() + "}"
}

// normalize is decide.Core's: a single address is widened to its ban unit.
func (c *Cluster) normalize(p netip.Prefix) netip.Prefix {
	if p.Bits() == p.Addr().BitLen() {
		return c.core.Unit(p.Addr())
	}
	return p.Masked()
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

func (c *Cluster) lockKey(k netip.Prefix) func() {
	m := &c.keyLocks[maphash.Comparable(shardSeed, k)%uint64(len(c.keyLocks))]
	m.Lock()
	return m.Unlock
}

// Fail implements server.Backend: the failure is counted in Redis; the
// failure that reaches the threshold bans, there and here, before Fail returns.
func (c *Cluster) Fail(ctx context.Context, a netip.Addr, now time.Time) (decide.FailResult, error) {
	if !c.Up() {
		return c.localFail(ctx, a, now)
	}
	a = decide.Clean(a)
	key := c.core.Unit(a)
	never := c.core.Lists().NeverBan(a)
	// Already banned here (possibly by a range Redis cannot match): count, do not ban again.
	hold := never || c.core.Decide(a, now).Reason == decide.Banned
	defer c.lockKey(key)()
	p := c.policy
	member := c.id + ":" + strconv.FormatUint(c.seq.Add(1), 36)
	v, err := failScript.Run(ctx, c.rdb,
		[]string{c.key("fail", key), c.key("ban", key), c.key("count", key), c.key("unban", key)},
		now.UnixMilli(), ms(p.FindTime), p.MaxFailures, member, flag(hold),
		ms(p.BanTime), p.BanFactor, ms(p.MaxBanTime), c.events, key.String(), a.String(), c.id).Int64Slice()
	if err != nil || len(v) != 4 {
		c.lost(fmt.Errorf("failure script: %w", errOr(err, len(v))))
		return c.localFail(ctx, a, now)
	}
	c.local.Metrics.Failures.Inc()
	res := decide.FailResult{Key: key, Failures: int(v[0]), NeverBan: never}
	if v[1] == 0 {
		return res, nil
	}
	res.Banned = true
	res.Ban = decide.Ban{Key: key, Until: time.UnixMilli(v[2]).UTC(), Count: int(v[3]), Failures: int(v[0])}
	res.Evicted = c.core.Apply(res.Ban)
	c.local.Metrics.BansFailures.Inc()
	c.local.LogBan(a.String(), res.Ban, now, "")
	return res, c.local.Recorded(res.Ban, res.Evicted, now)
}

// Failures implements server.Backend: the count in Redis, which every
// instance adds to; the local count while Redis is unreachable.
func (c *Cluster) Failures(ctx context.Context, a netip.Addr, now time.Time) int {
	if !c.Up() {
		return c.local.Failures(ctx, a, now)
	}
	key := c.core.Unit(decide.Clean(a))
	min := strconv.FormatInt(now.Add(-c.policy.FindTime).UnixMilli()+1, 10)
	n, err := c.rdb.ZCount(ctx, c.key("fail", key), min, "+inf").Result()
	if err != nil {
		return c.local.Failures(ctx, a, now)
	}
	return int(n)
}

func (c *Cluster) localFail(ctx context.Context, a netip.Addr, now time.Time) (decide.FailResult, error) {
	res, err := c.local.Fail(ctx, a, now)
	if res.Banned {
		c.dirty.Store(true)
	}
	return res, err
}

// Succeed implements server.Backend: the unit's failures are forgotten here
// and in Redis. A Redis error is not the app's problem: the count expires
// after the find time anyway.
func (c *Cluster) Succeed(ctx context.Context, a netip.Addr, now time.Time) error {
	a = decide.Clean(a)
	if err := c.local.Succeed(ctx, a, now); err != nil {
		return err
	}
	if !c.Up() {
		return nil
	}
	key := c.core.Unit(a)
	msg, _ := jsonMessage(message{Op: "success", Key: key.String(), IP: a.String(), Origin: c.id})
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, c.key("fail", key))
		p.Publish(ctx, c.events, msg)
		return nil
	})
	if err != nil {
		c.lost(fmt.Errorf("success: %w", err))
	}
	return nil
}

// Ban implements server.Backend: a manual ban, stored in Redis with its
// escalation count, then here.
func (c *Cluster) Ban(ctx context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (decide.Ban, error) {
	if !c.Up() {
		return c.localBan(ctx, p, d, note, now)
	}
	key := c.normalize(p)
	defer c.lockKey(key)()
	ip := p.String() // as Local logs it: a bare IP without /32
	if p.IsSingleIP() {
		ip = p.Addr().String()
	}
	pol := c.policy
	dms := int64(0)
	if d > 0 {
		dms = max(ms(d), 1)
	}
	v, err := banScript.Run(ctx, c.rdb, []string{c.key("ban", key), c.key("count", key), c.key("unban", key)},
		now.UnixMilli(), dms, ms(pol.BanTime), pol.BanFactor, ms(pol.MaxBanTime), note,
		c.events, key.String(), ip, c.id).Int64Slice()
	if err != nil || len(v) != 2 {
		c.lost(fmt.Errorf("ban script: %w", errOr(err, len(v))))
		return c.localBan(ctx, p, d, note, now)
	}
	b := decide.Ban{Key: key, Until: time.UnixMilli(v[0]).UTC(), Manual: true, Note: note, Count: int(v[1])}
	evicted := c.core.Apply(b)
	if _, ok := c.core.Record(key); !ok {
		// Apply had no room: the range table is full. Take it back from Redis too.
		c.unbanKeys(ctx, []netip.Prefix{key}, map[netip.Prefix]decide.Ban{}, ip, now)
		return decide.Ban{}, decide.ErrTooManyRanges
	}
	c.local.Metrics.BansManual.Inc()
	c.local.LogBan(ip, b, now, "")
	return b, c.local.Recorded(b, evicted, now)
}

func (c *Cluster) localBan(ctx context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (decide.Ban, error) {
	b, err := c.local.Ban(ctx, p, d, note, now)
	if err == nil || b.Key.IsValid() {
		c.dirty.Store(true)
	}
	return b, err
}

// Unban implements server.Backend: the bans covering a (its unit's, and the
// ranges this instance knows to contain it) are lifted here, then in Redis.
func (c *Cluster) Unban(ctx context.Context, a netip.Addr, now time.Time) ([]decide.Ban, error) {
	a = decide.Clean(a)
	defer c.lockKey(c.core.Unit(a))() // ranges lifted here are not locked: they are rare and manual
	lifted := c.core.Unban(a)
	keys := []netip.Prefix{c.core.Unit(a)}
	byKey := map[netip.Prefix]decide.Ban{}
	for _, b := range lifted {
		byKey[b.Key] = b
		if b.Key != keys[0] {
			keys = append(keys, b.Key)
		}
	}
	lifted = append(lifted, c.unbanKeys(ctx, keys, byKey, a.String(), now)...)
	return lifted, c.local.Forgotten(a.String(), lifted, now, "")
}

// Remove implements server.Backend: the ban under exactly p is lifted here,
// then in Redis.
func (c *Cluster) Remove(ctx context.Context, p netip.Prefix, now time.Time) (decide.Ban, bool, error) {
	key := c.normalize(p)
	defer c.lockKey(key)()
	byKey := map[netip.Prefix]decide.Ban{}
	b, ok := c.core.Remove(key)
	if ok {
		byKey[key] = b
	}
	if more := c.unbanKeys(ctx, []netip.Prefix{key}, byKey, p.String(), now); len(more) > 0 && !ok {
		b, ok = more[0], true
	}
	if !ok {
		return b, false, nil
	}
	return b, true, c.local.Forgotten(p.String(), []decide.Ban{b}, now, "")
}

// unbanKeys lifts the bans under keys in Redis; local holds those already
// lifted here. It returns the bans Redis held that this instance did not.
// While Redis is unreachable the keys lifted here are queued for later.
func (c *Cluster) unbanKeys(ctx context.Context, keys []netip.Prefix, local map[netip.Prefix]decide.Ban, ip string, now time.Time) []decide.Ban {
	var extra []decide.Ban
	for i, k := range keys {
		if c.Up() {
			lu := int64(0)
			if b, ok := local[k]; ok {
				lu = b.Until.UnixMilli()
			}
			h, err := unbanScript.Run(ctx, c.rdb,
				[]string{c.key("ban", k), c.key("count", k), c.key("unban", k), c.key("fail", k)},
				now.UnixMilli(), -1, lu, c.events, k.String(), ip, c.id).StringSlice()
			if err == nil {
				if b, ok := parseHash(k, h); ok {
					if _, had := local[k]; !had {
						extra = append(extra, b)
					}
				}
				continue
			}
			c.lost(fmt.Errorf("unban script: %w", err))
		}
		c.queueUnbans(keys[i:], local, ip, now)
		break
	}
	return extra
}

func (c *Cluster) queueUnbans(keys []netip.Prefix, local map[netip.Prefix]decide.Ban, ip string, now time.Time) {
	c.pendMu.Lock()
	for _, k := range keys {
		b, ok := local[k]
		if !ok {
			continue // nothing lifted here: nothing to replay
		}
		if len(c.pending) >= maxPending {
			c.dropOldestPending()
		}
		c.pending[k] = pendingUnban{until: b.Until, at: now, ip: ip}
	}
	c.pendMu.Unlock()
	c.dirty.Store(true)
}

// dropOldestPending makes room in the pending queue; pendMu is held.
func (c *Cluster) dropOldestPending() {
	var oldest netip.Prefix
	var at time.Time
	for k, p := range c.pending {
		if !oldest.IsValid() || p.at.Before(at) {
			oldest, at = k, p.at
		}
	}
	delete(c.pending, oldest)
	c.log.Warn("unban queue full; oldest queued unban dropped", "key", oldest.String(), "max", maxPending)
}

// lost marks Redis unreachable after a failed command; the sync loop brings
// it back.
func (c *Cluster) lost(err error) {
	c.errors.Inc()
	c.setState(stateDown, err)
}

// setState records a change of Redis's reachability, logging each outage and
// each recovery once.
func (c *Cluster) setState(s int32, err error) {
	old := c.state.Swap(s)
	if old == s {
		return
	}
	switch {
	case s == stateUp && old == stateUnknown:
		c.log.Info("redis connected; bans shared", "channel", c.events)
	case s == stateUp:
		c.reconnects.Inc()
		c.log.Warn("redis reachable again; bans shared")
	case old == stateUnknown:
		c.log.Error("redis unreachable at start; deciding from the local table, counting failures locally", "err", err)
	default:
		c.log.Error("redis unreachable; deciding from the local table, counting failures locally", "err", err)
	}
}

func flag(b bool) int {
	if b {
		return 1
	}
	return 0
}

func errOr(err error, n int) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("unexpected reply of %d values", n)
}

// parseHash reads a ban hash (a flat HGETALL list) under key.
func parseHash(key netip.Prefix, h []string) (decide.Ban, bool) {
	if len(h) < 2 {
		return decide.Ban{}, false
	}
	b := decide.Ban{Key: key}
	var until int64
	for i := 0; i+1 < len(h); i += 2 {
		v := h[i+1]
		switch h[i] {
		case "until":
			until, _ = strconv.ParseInt(v, 10, 64)
		case "count":
			b.Count, _ = strconv.Atoi(v)
		case "failures":
			b.Failures, _ = strconv.Atoi(v)
		case "manual":
			b.Manual = v == "1"
		case "note":
			b.Note = v
		}
	}
	if until == 0 {
		return decide.Ban{}, false
	}
	b.Until = time.UnixMilli(until).UTC()
	return b, true
}

// hashIP returns the ip field of a ban hash.
func hashIP(h []string) string {
	for i := 0; i+1 < len(h); i += 2 {
		if h[i] == "ip" {
			return h[i+1]
		}
	}
	return ""
}

// keyOf extracts K from PREFIX kind:{K}.
func (c *Cluster) keyOf(redisKey string) (netip.Prefix, bool) {
	i, j := strings.IndexByte(redisKey, '{'), strings.LastIndexByte(redisKey, '}')
	if i < 0 || j < i {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(redisKey[i+1 : j])
	return p, err == nil
}

var errStalled = errors.New("no reply on the pub/sub connection")

var setLogger sync.Once
