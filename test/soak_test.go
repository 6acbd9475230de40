package test

import (
	"strconv"
	"strings"
	"testing"
)

// scrapeMetrics reads doorman's /metrics into a map from series (name with
// labels, as printed) to value.
func scrapeMetrics(t *testing.T, d *Doorman) map[string]float64 {
	t.Helper()
	code, body := d.API(t, "GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("GET /metrics: status %d", code)
	}
	return parseMetrics(string(body))
}

func parseMetrics(s string) map[string]float64 {
	m := map[string]float64{}
	for _, line := range strings.Split(s, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}
