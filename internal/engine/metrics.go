package server

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
	decisions    [6]*metrics.Counter // by decide.Reason
	Failures     *metrics.Counter
	Successes    *metrics.Counter
	BansFailures *metrics.Counter
	BansManual   *metrics.Counter
	Unbans       *metrics.Counter
	EvictedBans  *metrics.Counter
	EvictedTrack *metrics.Counter
	ReloadsOK    *metrics.Counter
	ReloadsFail  *metrics.Counter
	StoreErrors  *metrics.Counter
}

// NewMetrics registers the series; core feeds the gauges.
func NewMetrics(core *decide.Core, dryRun bool, now func() time.Time) *Metrics {
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
	m.EvictedBans = s.NewCounter(`doorman_evictions_total{table="bans"}`)
	m.EvictedTrack = s.NewCounter(`doorman_evictions_total{table="failures"}`)
	m.ReloadsOK = s.NewCounter(`doorman_reloads_total{result="ok"}`)
	m.ReloadsFail = s.NewCounter(`doorman_reloads_total{result="error"}`)
	m.StoreErrors = s.NewCounter("doorman_store_errors_total")
	s.NewGauge("doorman_bans_active", func() float64 { return float64(core.Table().ActiveCount(now())) })
	s.NewGauge("doorman_ban_records", func() float64 { return float64(core.Table().Len()) })
	s.NewGauge("doorman_failures_tracked", func() float64 { return float64(core.Tracker().Len()) })
	s.NewGauge("doorman_list_prefixes{list=\"allow\"}", func() float64 { a, _, _ := core.Lists().Sizes(); return float64(a) })
	s.NewGauge("doorman_list_prefixes{list=\"deny\"}", func() float64 { _, d, _ := core.Lists().Sizes(); return float64(d) })
	s.NewGauge("doorman_list_prefixes{list=\"never_ban\"}", func() float64 { _, _, n := core.Lists().Sizes(); return float64(n) })
	dry := 0.0
	if dryRun {
		dry = 1
	}
	s.NewGauge("doorman_dry_run", func() float64 { return dry })
	return m
}

// Decision counts one verdict (the would-be verdict in dry-run mode).
func (m *Metrics) Decision(r decide.Reason) { m.decisions[r].Inc() }

// Set returns the underlying set, for extra series (cluster mode).
func (m *Metrics) Set() *metrics.Set { return m.set }

// Write writes the Prometheus text format.
func (m *Metrics) Write(w io.Writer) {
	m.set.WritePrometheus(w)
	metrics.WriteProcessMetrics(w)
}
