package lists

import (
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Register adds the per-feed metrics to s: prefixes in force, age of the
// last good copy (seconds since its source last confirmed it; -1 when there
// is none), failed fetches, and entries skipped by kind. Feed names are
// letters, digits, - and _ (validated), so they are safe as label values.
func (m *Manager) Register(s *metrics.Set, now func() time.Time) {
	m.mu.Lock()
	feeds := m.feeds
	m.mu.Unlock()
	for _, f := range feeds {
		status := func() FeedStatus {
			for _, st := range m.Feeds() {
				if st.Name == f.Name {
					return st
				}
			}
			return FeedStatus{}
		}
		label := fmt.Sprintf(`{feed=%q}`, f.Name)
		s.NewGauge("doorman_feed_prefixes"+label, func() float64 { return float64(status().Prefixes) })
		s.NewGauge("doorman_feed_age_seconds"+label, func() float64 {
			st := status()
			if !st.Have {
				return -1
			}
			return now().Sub(st.Verified).Seconds()
		})
		s.NewGauge("doorman_feed_failures_total"+label, func() float64 { return float64(status().Failures) })
		for _, k := range []struct {
			why string
			n   func(Parsed) int
		}{{"wide", func(p Parsed) int { return p.Wide }}, {"local", func(p Parsed) int { return p.Local }},
			{"malformed", func(p Parsed) int { return p.Malformed }}} {
			s.NewGauge(fmt.Sprintf(`doorman_feed_skipped{feed=%q,why=%q}`, f.Name, k.why), func() float64 { return float64(k.n(status().Skipped)) })
		}
		s.NewGauge(fmt.Sprintf(`doorman_feed_skipped{feed=%q,why="limit"}`, f.Name), func() float64 { return float64(status().Cut) })
	}
}
