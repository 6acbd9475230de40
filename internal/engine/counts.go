package engine

import "github.com/doorman/doorman/decide"

// Counts returns the decisions counted so far, by reason, and the failures:
// for samplers such as the status page's per-minute chart, so the decision
// path pays nothing for them.
func (m *Metrics) Counts() (decisions [decide.NumReasons]uint64, failures uint64) {
	return m.decisionCounts(), m.Failures.Get()
}
