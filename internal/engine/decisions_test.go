package engine

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
)

// Decisions counted in every shard, from goroutines at once, add up in
// Counts and in the exposition, which never goes back between Writes.
func TestDecisionShards(t *testing.T) {
	m := NewMetrics(func(time.Time) decide.Stats { return decide.Stats{} }, false, time.Now)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				m.Decision(decide.Allowed, uint64(g*1000+i))
				if i%4 == 0 {
					m.Decision(decide.Banned, uint64(i))
				}
			}
		}()
	}
	var last uint64
	for range 20 { // Writes while counting: the count never goes back
		n := allowedIn(t, m)
		if n < last {
			t.Errorf("allowed went back from %d to %d", last, n)
		}
		last = n
	}
	wg.Wait()
	n, _ := m.Counts()
	if n[decide.Allowed] != 4000 || n[decide.Banned] != 1000 {
		t.Errorf("Counts: allowed %d banned %d, want 4000 1000", n[decide.Allowed], n[decide.Banned])
	}
	var b bytes.Buffer
	m.Write(&b)
	for _, want := range []string{`doorman_decisions_total{verdict="allow",reason="allowed"} 4000`,
		`doorman_decisions_total{verdict="deny",reason="banned"} 1000`} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

func allowedIn(t *testing.T, m *Metrics) uint64 {
	t.Helper()
	var b bytes.Buffer
	m.Write(&b)
	_, rest, ok := strings.Cut(b.String(), `doorman_decisions_total{verdict="allow",reason="allowed"} `)
	if !ok {
		t.Fatal("no allowed series")
	}
	line, _, _ := strings.Cut(rest, "\n")
	n, err := strconv.ParseUint(line, 10, 64)
	if err != nil {
		t.Fatalf("allowed %q: %v", line, err)
	}
	return n
}
