package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// promQL words that are not metric names: functions, aggregations and
// keywords used in the dashboard's queries.
var promQLWords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "rate": true, "irate": true,
	"increase": true, "by": true, "without": true, "label_values": true, "topk": true, "histogram_quantile": true,
	"instance": true, // label_values' label argument
}

// queryNames returns the metric names and the grouping labels of a query.
func queryNames(expr string) (names, groupBy []string) {
	s := regexp.MustCompile(`"[^"]*"`).ReplaceAllString(expr, `""`) // label values
	s = regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(s, "")     // label matchers
	s = regexp.MustCompile(`\[[^\]]*\]`).ReplaceAllString(s, "")    // ranges
	for _, m := range regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`).FindAllStringSubmatch(s, -1) {
		for l := range strings.SplitSeq(m[1], ",") {
			groupBy = append(groupBy, strings.TrimSpace(l))
		}
	}
	s = regexp.MustCompile(`\b(?:by|without)\s*\([^)]*\)`).ReplaceAllString(s, "")
	for _, w := range regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`).FindAllString(s, -1) {
		if !promQLWords[w] && !strings.HasPrefix(w, "__") {
			names = append(names, w)
		}
	}
	return names, groupBy
}

func TestQueryNames(t *testing.T) {
	for _, tc := range []struct{ expr, names, by string }{
		{`sum by (reason) (rate(doorman_decisions_total{instance=~"$instance",x="a b"}[$__rate_interval]))`, "doorman_decisions_total", "reason"},
		{`min(doorman_redis_up{instance=~"$instance"})`, "doorman_redis_up", ""},
		{`label_values(doorman_bans_active, instance)`, "doorman_bans_active", ""},
		{`sum(a_total) / sum(b_total)`, "a_total b_total", ""},
	} {
		names, by := queryNames(tc.expr)
		if strings.Join(names, " ") != tc.names || strings.Join(by, " ") != tc.by {
			t.Errorf("%s: names %v by %v, want %q by %q", tc.expr, names, by, tc.names, tc.by)
		}
	}
}

// TestGrafanaDashboard checks every query of docs/grafana/doorman.json
// against the /metrics of a running doorman in cluster mode (so the Redis
// series exist): each metric name is exported, and each grouping label is a
// label of that metric.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "grafana", "doorman.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name  string
				Query any
			}
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("docs/grafana/doorman.json: %v", err)
	}
	exprs := map[string]string{} // expr → where
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs[tg.Expr] = "panel " + p.Title
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			exprs[q["query"].(string)] = "variable " + v.Name
		}
	}

	d := startDoorman(t, map[string]string{"DOORMAN_REDIS_URL": clusterRedis(t), "DOORMAN_REDIS_PREFIX": clusterPrefix(t)})
	code, body, err := d.get("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	labels := map[string][]string{} // metric → label names seen
	for line := range strings.SplitSeq(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(strings.Fields(line)[0], "{")
		labels[name] = append(labels[name], regexp.MustCompile(`([a-zA-Z_]+)=`).FindAllString(rest, -1)...)
	}

	want := []string{"doorman_decisions_total", "doorman_failures_total", "doorman_bans_active", "doorman_evictions_total",
		"doorman_redis_up", "doorman_store_errors_total", "doorman_notify_dropped_total"}
	var used []string
	for expr, where := range exprs {
		names, by := queryNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			used = append(used, n)
			ls, ok := labels[n]
			if !ok {
				t.Errorf("%s: %s is not exported by doorman (query %q)", where, n, expr)
				continue
			}
			for _, l := range by {
				if !slices.Contains(ls, l+"=") {
					t.Errorf("%s: %s has no label %q (query %q)", where, n, l, expr)
				}
			}
		}
	}
	for _, w := range want {
		if !slices.Contains(used, w) {
			t.Errorf("no panel shows %s", w)
		}
	}
}
