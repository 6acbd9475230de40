package engine

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/doorman/doorman/decide"
)

// Metrics are doorman's Prometheus series, all prefixed doorman_. Counters on
// the decision path are created up front, so counting is one atomic add.
type Metrics struct {
	set          *metrics.Set
	decisions    [decide.NumReasons]*metrics.Counter // set from shards at each Write
	shards       [decisionShards]decisionShard
	setting      sync.Mutex // orders Writes' sums, so the counters never go back
	Failures     *metrics.Counter
	Successes    *metrics.Counter
	BansFailures *metrics.Counter
	BansManual   *metrics.Counter
	BansRange    *metrics.Counter
	BansRefused  *metrics.Counter // the table was full of active manual bans
	Unbans       *metrics.Counter
	EvictedBans  *metrics.Counter // active bans evicted
	EvictedStale *metrics.Counter // expired records evicted
	EvictedTrack *metrics.Counter
	ReloadsOK    *metrics.Counter
	ReloadsFail  *metrics.Counter
	StoreErrors  *metrics.Counter
}

// NewMetrics registers the series; stats feeds the gauges at each scrape.
func NewMetrics(stats func(now time.Time) decide.Stats, dryRun bool, now func() time.Time) *Metrics {
	s := metrics.NewSet()
	m := &Metrics{set: s}
	for _, r := range decide.Reasons() {
		verdict := "deny"
		if r == decide.Allowed {
			verdict = "allow"
		}
		m.decisions[r] = s.NewCounter(`doorman_decisions_total{verdict="` + verdict + `",reason="` + r.String() + `"}`)
	}
	m.Failures = s.NewCounter("doorman_failures_total")
	m.Successes = s.NewCounter("doorman_successes_total")
	m.BansFailures = s.NewCounter(`doorman_bans_issued_total{reason="failures"}`)
	m.BansManual = s.NewCounter(`doorman_bans_issued_total{reason="manual"}`)
	m.Unbans = s.NewCounter("doorman_unbans_total")
	m.BansRange = s.NewCounter(`doorman_bans_issued_total{reason="range"}`)
	m.BansRefused = s.NewCounter("doorman_bans_refused_total")
	m.EvictedBans = s.NewCounter(`doorman_evictions_total{table="bans",kind="active"}`)
	m.EvictedStale = s.NewCounter(`doorman_evictions_total{table="bans",kind="expired"}`)
	m.EvictedTrack = s.NewCounter(`doorman_evictions_total{table="failures"}`)
	m.ReloadsOK = s.NewCounter(`doorman_reloads_total{result="ok"}`)
	m.ReloadsFail = s.NewCounter(`doorman_reloads_total{result="error"}`)
	m.StoreErrors = s.NewCounter("doorman_store_errors_total")
	gauge := func(name string, f func(decide.Stats) int) {
		s.NewGauge(name, func() float64 { return float64(f(stats(now()))) })
	}
	gauge("doorman_bans_active", func(st decide.Stats) int { return st.ActiveBans })
	gauge("doorman_ban_records", func(st decide.Stats) int { return st.BanRecords })
	gauge("doorman_failures_tracked", func(st decide.Stats) int { return st.Tracked })
	gauge(`doorman_list_prefixes{list="allow"}`, func(st decide.Stats) int { return st.Allow })
	gauge(`doorman_list_prefixes{list="deny"}`, func(st decide.Stats) int { return st.Deny })
	gauge(`doorman_list_prefixes{list="never_ban"}`, func(st decide.Stats) int { return st.NeverBan })
	gauge(`doorman_list_prefixes{list="sourced"}`, func(st decide.Stats) int { return st.Sourced })
	dry := 0.0
	if dryRun {
		dry = 1
	}
	s.NewGauge("doorman_dry_run", func() float64 { return dry })
	return m
}

// decisionShards spread the decision counts over cache lines: one shared
// counter, added to by every decision on every core, made each add a
// transfer of its line between cores (BenchmarkHandleParallel -cpu 2: 576
// ns/op with one counter, 379 with shards).
const decisionShards = 16

type decisionShard struct {
	n [decide.NumReasons]atomic.Uint64
	_ [128 - decide.NumReasons*8%128]byte // a shard per 128 bytes: two lines, as CPUs prefetch
}

// Decision counts one verdict (the would-be verdict in dry-run mode) in the
// shard of conn, an id of the connection it was asked on: requests on one
// connection are served one at a time, so shards touched from two cores at
// once are rare.
func (m *Metrics) Decision(r decide.Reason, conn uint64) {
	m.shards[conn%decisionShards].n[r].Add(1)
}

// decisionCounts sums the shards.
func (m *Metrics) decisionCounts() (n [decide.NumReasons]uint64) {
	for i := range m.shards {
		for r := range n {
			n[r] += m.shards[i].n[r].Load()
		}
	}
	return n
}

// Set returns the underlying set, for the series of other parts (cluster mode).
func (m *Metrics) Set() *metrics.Set { return m.set }

// Write writes the Prometheus text format.
func (m *Metrics) Write(w io.Writer) {
	m.setting.Lock()
	for r, n := range m.decisionCounts() {
		m.decisions[r].Set(n)
	}
	m.setting.Unlock()
	m.set.WritePrometheus(w)
	metrics.WriteProcessMetrics(w)
}
