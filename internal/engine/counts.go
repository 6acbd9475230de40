package engine

import "github.com/doorman/doorman/decide"

// Counts returns the decisions counted so far, by reason, and the failures:
// for samplers such as the status page's per-minute chart, so the decision
// path pays nothing for them.
func (m *Metrics) Counts() (decisions [decide.NumReasons]uint64, failures uint64) {
	for r, c := range m.decisions {
		if c != nil {
			decisions[r] = c.Get()
		}
	}
	return decisions, m.Failures.Get()
}
