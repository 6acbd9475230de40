package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/throttle"
)

// Options configure New.
type Options struct {
	URL    string        // DOORMAN_REDIS_URL
	Prefix string        // DOORMAN_REDIS_PREFIX; "doorman:" when empty
	Local  *engine.Local // this instance's service: its memory, and the inlet for peers' changes
	Log    *slog.Logger
	Now    func() time.Time
	// Tick is how often the sync loop checks the connection and pushes
	// changes made while Redis was unreachable; 0 means 1 s.
	Tick time.Duration
}

// Cluster is the engine.Backend of cluster mode: Redis decides counts, bans
// and locks, this doorman's memory (the Local's) follows, and the Local
// commits every change. While Redis is unreachable it falls back to the
// Memory backend. Set it with engine.Local.UseBackend.
type Cluster struct {
	local  *engine.Local  // Learn: the inlet for peers' changes
	mem    *engine.Memory // this doorman's memory, and the fallback
	core   *decide.Core   // mem's
	policy decide.Policy
	rdb    redis.UniversalClient
	keys   keyspace
	id     string // tags this instance's messages, so it skips its own
	log    *slog.Logger
	now    func() time.Time
	tick   time.Duration

	state    atomic.Int32 // stateUnknown, stateUp or stateDown
	lastSync atomic.Int64 // unix ns of the last full resync that succeeded
	dirty    atomic.Bool  // local changes await a push to Redis
	seq      atomic.Uint64

	accounts atomic.Pointer[Accounts] // nil until Accounts is called
	outbox   *outbox[netip.Prefix]    // unbans made while Redis was unreachable
	writer   *writer                  // logs and state-file writes of changes learned from peers
	keyLock  keyLocks
	refusals *throttle.Throttle // warnings of changes from Redis not applied: one a minute per kind

	reconnects *metrics.Counter
	errors     *metrics.Counter
	pushed     *metrics.Counter
	refused    *metrics.Counter
	received   map[string]*metrics.Counter
}

const (
	stateUnknown int32 = iota
	stateUp
	stateDown
)

// New builds the cluster service. It does not dial: Run connects, and until
// it has, the service falls back to the Local.
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
	if o.Log == nil {
		o.Log = slog.Default()
	}
	var id [8]byte
	rand.Read(id[:])
	log := o.Log.With("component", "cluster")
	c := &Cluster{
		local: o.Local, mem: o.Local.Memory(), core: o.Local.Memory().Core(), policy: o.Local.Memory().Core().Policy(), rdb: rdb, keys: keyspace{prefix: o.Prefix},
		id: hex.EncodeToString(id[:]), log: log, now: o.Now, tick: o.Tick, refusals: throttle.New(time.Minute),
	}
	c.outbox = newOutbox(maxOutbox, func(k netip.Prefix) {
		log.Warn("unban queue full; oldest queued unban dropped", "key", k.String(), "max", maxOutbox)
	})
	c.writer = newWriter(o.Local, o.Now)
	// go-redis logs through a package-level logger: set once, to the first
	// cluster's log (a doorman runs one).
	setLogger.Do(func() { redis.SetLogger(redisLogger{c.log}) })
	s := o.Local.Metrics().Set()
	s.NewGauge("doorman_redis_up", func() float64 {
		if c.state.Load() == stateUp {
			return 1
		}
		return 0
	})
	c.reconnects = s.NewCounter("doorman_redis_reconnects_total")
	c.errors = s.NewCounter("doorman_redis_errors_total")
	c.pushed = s.NewCounter("doorman_cluster_pushed_total")
	c.refused = s.NewCounter("doorman_cluster_refused_total")
	c.received = map[string]*metrics.Counter{}
	for _, op := range []string{"ban", "unban", "success"} {
		c.received[op] = s.NewCounter(`doorman_cluster_received_total{op="` + op + `"}`)
	}
	s.NewGauge("doorman_cluster_pending_unbans", func() float64 { return float64(c.outbox.len()) })
	return c, nil
}

// Up reports whether Redis is reachable and this instance is in sync with it.
func (c *Cluster) Up() bool { return c.state.Load() == stateUp }

// LastSync is when this instance last reconciled with Redis in full (zero:
// never); between resyncs it follows the channel.
func (c *Cluster) LastSync() time.Time {
	if ns := c.lastSync.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
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
		c.log.Info("redis connected; bans shared", "channel", c.keys.channel())
	case s == stateUp:
		c.reconnects.Inc()
		c.log.Warn("redis reachable again; bans shared")
	case old == stateUnknown:
		c.log.Error("redis unreachable at start; deciding from the local table, counting failures locally", "err", err)
	default:
		c.log.Error("redis unreachable; deciding from the local table, counting failures locally", "err", err)
	}
}

var errStalled = errors.New("no reply on the pub/sub connection")

var setLogger sync.Once
