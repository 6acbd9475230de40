package ui

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/minutes"
)

// Series of the per-minute ring: one per decision reason, then failures.
const (
	seriesFailures = int(decide.NumReasons)
	numSeries      = seriesFailures + 1
)

// sampler turns the running counters into per-minute counts: the decision
// path only increments its counters, and Sample, called about once a second,
// adds what changed since the last call to the minute it is called in.
type sampler struct {
	counts func() ([decide.NumReasons]uint64, uint64)
	ring   *minutes.Ring
	mu     sync.Mutex
	last   [numSeries]uint64
}

func (s *sampler) sample(now time.Time) {
	d, f := s.counts()
	s.mu.Lock()
	defer s.mu.Unlock()
	var cur [numSeries]uint64
	copy(cur[:], d[:])
	cur[seriesFailures] = f
	for i, v := range cur {
		if v > s.last[i] {
			s.ring.Add(i, v-s.last[i], now)
		}
	}
	s.last = cur
}

// Chart geometry, in SVG user units; the SVG scales to the page width.
const (
	chartW    = 600
	chartH    = 150
	chartTop  = 8
	chartBase = chartH - 18 // x axis
	barW      = chartW / minutes.Minutes
)

// colors of the reasons, colour-blind safe (Okabe–Ito), and of failures.
var colors = [numSeries]string{
	decide.Allowed:        "#009E73",
	decide.Denylisted:     "#CC79A7",
	decide.NotAllowlisted: "#E69F00",
	decide.Banned:         "#D55E00",
	decide.NoClientIP:     "#56B4E9",
	seriesFailures:        "#0072B2",
}

type bar struct {
	X, Y, W, H int
	Color      string
	Title      string
}

type legendItem struct {
	Name, Color string
	Total       uint64
}

// chart is a stacked bar chart of some series, one bar per minute.
type chart struct {
	W, H, Base int
	Bars       []bar
	Max        uint64 // the highest bar's total
	MaxY       int
	Legend     []legendItem
	Labels     []axisLabel
}

type axisLabel struct {
	X    int
	Text string
}

// drawChart stacks series (indexes into ring) per minute for the hour up to
// now. Heights are scaled to the highest minute; a minute with any count
// gets at least one unit of height, so a lone event is visible.
func drawChart(ring *minutes.Ring, series []int, names []string, now time.Time) chart {
	c := chart{W: chartW, H: chartH, Base: chartBase, MaxY: chartTop}
	data := make([][minutes.Minutes]uint64, len(series))
	var totals [minutes.Minutes]uint64
	for i, s := range series {
		data[i] = ring.Last(s, now)
		var sum uint64
		for m, v := range data[i] {
			totals[m] += v
			sum += v
		}
		c.Legend = append(c.Legend, legendItem{Name: names[i], Color: colors[s], Total: sum})
	}
	for _, t := range totals {
		c.Max = max(c.Max, t)
	}
	if c.Max == 0 {
		c.Labels = axisLabels(now)
		return c
	}
	height := float64(chartBase - chartTop)
	start := now.Truncate(time.Minute).Add(-(minutes.Minutes - 1) * time.Minute)
	for m := range minutes.Minutes {
		y := chartBase
		for i, s := range series {
			v := data[i][m]
			if v == 0 {
				continue
			}
			h := max(1, int(float64(v)/float64(c.Max)*height+0.5))
			y -= h
			at := start.Add(time.Duration(m) * time.Minute).UTC().Format("15:04")
			c.Bars = append(c.Bars, bar{X: m * barW, Y: y, W: barW - 1, H: h, Color: colors[s],
				Title: fmt.Sprintf("%s UTC: %d %s", at, v, names[i])})
		}
	}
	c.Labels = axisLabels(now)
	return c
}

func axisLabels(now time.Time) []axisLabel {
	return []axisLabel{{0, "−60 min"}, {chartW / 2, "−30 min"}, {chartW - 1, now.UTC().Format("15:04") + " UTC"}}
}

// rangeCount is one of the top banned ranges: how many active bans fall in it.
type rangeCount struct {
	Range string
	Bans  int
}

// topRanges groups active bans by their /24 (IPv4) or /48 (IPv6), or by
// their own key when it is wider, and returns the n largest groups with more
// than one ban, largest first.
func topRanges(bans []decide.Ban, n int) []rangeCount {
	counts := map[netip.Prefix]int{}
	for _, b := range bans {
		bits := 24
		if b.Key.Addr().Is6() {
			bits = 48
		}
		p, err := b.Key.Addr().Prefix(min(bits, b.Key.Bits()))
		if err != nil {
			continue
		}
		counts[p]++
	}
	var out []rangeCount
	for p, c := range counts {
		if c > 1 || p.Bits() < 24 || (p.Addr().Is6() && p.Bits() < 48) {
			out = append(out, rangeCount{p.String(), c})
		}
	}
	slices.SortFunc(out, func(a, b rangeCount) int {
		return cmp.Or(cmp.Compare(b.Bans, a.Bans), cmp.Compare(a.Range, b.Range))
	})
	return out[:min(n, len(out))]
}
