package kernel

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// memory is a stand-in for decide.Core's records.
type memory struct {
	mu   sync.Mutex
	bans map[netip.Prefix]decide.Ban
}

func (m *memory) Record(p netip.Prefix) (decide.Ban, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.bans[p]
	return b, ok
}

func (m *memory) Bans(now time.Time) []decide.Ban {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []decide.Ban
	for _, b := range m.bans {
		if b.Active(now) {
			out = append(out, b)
		}
	}
	return out
}

func (m *memory) put(b decide.Ban) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bans[b.Key] = b
}

func (m *memory) lift(p netip.Prefix) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.bans, p)
}

// TestHook: a committed change is in the kernel (or out of it) as memory
// holds it when its hook returns, and the receipt says so; a change learned
// from the cluster is written by Run.
func TestHook(t *testing.T) {
	ns, fd := netns(t)
	mem := &memory{bans: map[netip.Prefix]decide.Ban{}}
	tb, err := Open(Options{Name: "doorman_h", Hooks: []string{"input"}, Ports: []uint16{80}, MinCount: 2, Max: 1000,
		Record: mem.Record, Bans: mem.Bans, Check: time.Hour, NetNS: fd})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	now := time.Now()
	if err := tb.Rebuild(nil, now); err != nil {
		t.Fatal(err)
	}
	in := func(addr string) bool {
		return slices.Contains(setElements(t, ns, "doorman_h", "bans4"), addr)
	}
	report := func(r engine.Receipt) any {
		for _, x := range r.Reports {
			if x.Name == Report {
				return x.OK
			}
		}
		return nil
	}
	banned := func(key string, count int) *decide.Ban {
		b := ban(key, time.Hour, count, now)
		mem.put(b)
		return &b
	}
	for _, tc := range []struct {
		name   string
		ch     func() engine.Change
		addr   string
		want   any  // the report
		inWant bool // addr in bans4 afterwards
	}{
		{"ban", func() engine.Change {
			return engine.Change{Source: engine.SourceFailures, Ban: banned("192.0.2.1/32", 2)}
		},
			"192.0.2.1", true, true},
		{"ban below min count", func() engine.Change {
			return engine.Change{Source: engine.SourceFailures, Ban: banned("192.0.2.2/32", 1)}
		},
			"192.0.2.2", false, false},
		{"ban lifted before its hook ran", func() engine.Change {
			b := banned("192.0.2.3/32", 2)
			mem.lift(b.Key)
			return engine.Change{Source: engine.SourceManual, Ban: b}
		}, "192.0.2.3", false, false},
		{"unban", func() engine.Change {
			b, _ := mem.Record(netip.MustParsePrefix("192.0.2.1/32"))
			mem.lift(b.Key)
			return engine.Change{Source: engine.SourceManual, Lifted: []decide.Ban{b}}
		}, "192.0.2.1", true, false},
		{"failure without a ban", func() engine.Change {
			return engine.Change{Source: engine.SourceFailures, Failure: true, Key: netip.MustParsePrefix("192.0.2.4/32")}
		}, "192.0.2.4", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tb.Committed(context.Background(), tc.ch(), now)
			if got := report(r); got != tc.want {
				t.Errorf("report %q: got %v, want %v", Report, got, tc.want)
			}
			if got := in(tc.addr); got != tc.inWant {
				t.Errorf("%s in bans4: got %v, want %v", tc.addr, got, tc.inWant)
			}
		})
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tb.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if r := tb.Committed(context.Background(), engine.Change{Source: engine.SourceCluster, Ban: banned("192.0.2.5/32", 3)}, now); len(r.Reports) != 0 {
		t.Fatalf("learned change: reports %v, want none (no caller waits)", r.Reports)
	}
	for deadline := time.Now().Add(5 * time.Second); !in("192.0.2.5"); {
		if time.Now().After(deadline) {
			t.Fatal("a ban learned from the cluster is not in the kernel 5s later")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
