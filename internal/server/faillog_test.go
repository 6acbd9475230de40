package server

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// Under a storm of failures the webhook writes at most
// engine.FailureLinesPerSecond failure lines a second at info and sums up the
// rest; every ban line is written.
func TestFailureLinesBounded(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p := decide.Policy{MaxFailures: 3, FindTime: 10 * time.Minute, BanTime: time.Hour, BanFactor: 2,
		MaxBanTime: 168 * time.Hour, IPv4Prefix: 32, IPv6Prefix: 64}
	core := decide.New(p, nil, 1000, 1000)
	now := t0
	clock := func() time.Time { return now }
	m := engine.NewMetrics(core.Stats, false, clock)
	f := &fixture{core: core, now: t0, api: &API{Service: engine.NewLocal(core, nil, log, m), Now: clock, Metrics: m, Log: log}}

	const addrs, each = 100, 3 // every address is banned by its third failure
	for i := range addrs * each {
		ip := fmt.Sprintf("198.51.100.%d", i%addrs)
		if status, out := f.apiReq("POST", "/v1/failures", `{"ip":"`+ip+`","username":"admin"}`); status != 200 {
			t.Fatalf("failure %d: %d %v", i, status, out)
		}
	}
	count := func(msg string) int { return strings.Count(buf.String(), " msg="+msg+" ") }
	if got, want := count("failure"), engine.FailureLinesPerSecond; got != want {
		t.Errorf("failure lines within one second: %d, want %d", got, want)
	}
	if got := count("ban"); got != addrs {
		t.Errorf("ban lines: %d, want %d (never suppressed)", got, addrs)
	}
	now = t0.Add(engine.FailureSummaryEvery + time.Second)
	f.apiReq("POST", "/v1/failures", `{"ip":"203.0.113.1"}`)
	want := fmt.Sprintf(`msg="failures not logged at info" failures=%d units=%d `, addrs*each-engine.FailureLinesPerSecond, addrs)
	if !strings.Contains(buf.String(), want) {
		t.Errorf("no summary line %q in:\n%s", want, buf.String())
	}
}
