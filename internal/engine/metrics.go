package engine

import (
	"io"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/doorman/doorman/decide"
)

// Metrics are doorman's Prometheus series, all prefixed doorman_. Counters on
// the decision path are created up front, so counting is one atomic add.
type Metrics struct {
	set          *metrics.Set
	decisions    [decide.NumReasons]*metrics.Counter
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

// Decision counts one verdict (the would-be verdict in dry-run mode).
func (m *Metrics) Decision(r decide.Reason) { m.decisions[r].Inc() }

// Set returns the underlying set, for the series of other parts (cluster mode).
func (m *Metrics) Set() *metrics.Set { return m.set }

// Write writes the Prometheus text format.
func (m *Metrics) Write(w io.Writer) {
	m.set.WritePrometheus(w)
	metrics.WriteProcessMetrics(w)
}
