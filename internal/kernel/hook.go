package kernel

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// Report is the name of the kernel's report in a change's receipt: for a
// change that puts a ban, whether the kernel holds it (false for a ban kept
// out by DOORMAN_NFT_MIN_COUNT, or whose write failed); for one that only
// lifts bans, whether the lift was written.
const Report = "kernel"

// learnedQueue is how many keys of changes learned from the cluster wait
// for Run at most; beyond, they wait for the next Check.
const learnedQueue = 4096

// Committed is the kernel bans' engine.Hook: the keys a change puts or lifts
// (and the records it evicted or folded) are written as memory holds them
// now (Options.Record), before the call that made it answers, and reported.
// Writing what memory holds rather than what the change says keeps the
// kernel right when two changes of one key commit in the other order. A
// change learned from the cluster, which no caller waits for, is queued for
// Run instead.
func (t *Table) Committed(_ context.Context, ch engine.Change, now time.Time) engine.Receipt {
	var keys []netip.Prefix
	if b := ch.Ban; b != nil {
		keys = append(keys, b.Key)
		for _, e := range ch.Evicted {
			keys = append(keys, e.Key)
		}
		for _, f := range ch.Folded {
			keys = append(keys, f.Key)
		}
	}
	for _, b := range ch.Lifted {
		keys = append(keys, b.Key)
	}
	var rc engine.Receipt
	if len(keys) == 0 {
		return rc
	}
	if ch.Source == engine.SourceCluster {
		for _, k := range keys {
			if !t.learned.Put(k) {
				t.warn("queue", fmt.Errorf("%d changes learned from the cluster wait already; %s waits for the next check", learnedQueue, k))
			}
		}
		return rc
	}
	err := t.Sync(keys, now)
	if err != nil {
		t.warn("write", err)
	}
	if b := ch.Ban; b != nil {
		rc.Report(Report, t.Holds(*b))
	} else {
		rc.Report(Report, err == nil)
	}
	return rc
}

var _ engine.Hook = (*Table)(nil)

// Sync writes the bans memory holds under keys (Options.Record) to the
// kernel, and lifts those it no longer holds, in one transaction.
func (t *Table) Sync(keys []netip.Prefix, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var puts []decide.Ban
	var lifts []netip.Prefix
	for _, k := range keys {
		if b, ok := t.o.Record(k); ok && b.Active(now) {
			puts = append(puts, b)
		} else {
			lifts = append(lifts, k)
		}
	}
	return t.apply(puts, lifts, now)
}

// Run writes the changes learned from the cluster that Committed queued, a
// batch per transaction, and every Options.Check compares the kernel's sets
// with the bans in force (Options.Bans) and repairs them, until ctx ends.
func (t *Table) Run(ctx context.Context) {
	tick := time.NewTicker(t.o.Check)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.check1(time.Now())
		case k := <-t.learned:
			if err := t.Sync(t.learned.Batch(k, 256), time.Now()); err != nil {
				t.warn("write", err)
			}
		}
	}
}

// check1 runs one Check and logs what it found.
func (t *Table) check1(now time.Time) {
	drift, err := t.checkWith(t.o.Bans, now)
	if err != nil {
		t.o.Log.Error("kernel ban check failed", "table", t.o.Name, "err", err)
	} else if drift > 0 {
		t.o.Log.Warn("kernel bans repaired", "table", t.o.Name, "elements", drift)
	}
}

// warn logs a write that failed, at most once a minute per kind.
func (t *Table) warn(kind string, err error) {
	if skipped, ok := t.warned.Allow(kind, time.Now()); ok {
		t.o.Log.Error("kernel ban write failed; the next check repairs it", "table", t.o.Name, "err", err, "since_last_logged", skipped)
	}
}
