package throttle

import (
	"sync"
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	type step struct {
		key         string
		at          time.Duration
		wantOK      bool
		wantSkipped int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first event passes", []step{{"a", 0, true, 0}}},
		{"within the interval held back, then counted", []step{
			{"a", 0, true, 0}, {"a", 10 * time.Second, false, 0}, {"a", 59 * time.Second, false, 0},
			{"a", 60 * time.Second, true, 2}, {"a", 61 * time.Second, false, 0}, {"a", 200 * time.Second, true, 1}}},
		{"keys are independent", []step{
			{"a", 0, true, 0}, {"b", time.Second, true, 0}, {"a", 2 * time.Second, false, 0},
			{"b", 3 * time.Second, false, 0}, {"b", 61 * time.Second, true, 1}, {"a", 62 * time.Second, true, 1}}},
		{"a clock going back holds events back", []step{
			{"a", time.Minute, true, 0}, {"a", 0, false, 0}, {"a", 2 * time.Minute, true, 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			th := New(time.Minute)
			for i, s := range tc.steps {
				skipped, ok := th.Allow(s.key, t0.Add(s.at))
				if ok != s.wantOK || skipped != s.wantSkipped {
					t.Fatalf("step %d (%s at %v): got ok=%v skipped=%d, want ok=%v skipped=%d",
						i, s.key, s.at, ok, skipped, s.wantOK, s.wantSkipped)
				}
			}
		})
	}
}

// TestAllowConcurrent: of n events at one instant exactly one passes, and the
// next allowed one reports the other n-1.
func TestAllowConcurrent(t *testing.T) {
	th := New(time.Second)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	const n = 1000
	var mu sync.Mutex
	passed := 0
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, ok := th.Allow("k", now); ok {
				mu.Lock()
				passed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if passed != 1 {
		t.Fatalf("%d events passed at one instant, want 1", passed)
	}
	if skipped, ok := th.Allow("k", now.Add(time.Second)); !ok || skipped != n-1 {
		t.Fatalf("next interval: ok=%v skipped=%d, want true %d", ok, skipped, n-1)
	}
}
