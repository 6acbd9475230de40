package nginxcache

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/doorman/doorman/internal/engine"
)

// Report is the name of the refresh's report in a change's receipt: true
// when every nginx re-asked doorman about the addresses the change alters,
// false when a refresh failed (that nginx may serve the old verdict until
// its copy expires).
const Report = "proxies_refreshed"

// Committed is the cached mode's engine.Hook: a change that puts or lifts a
// ban is refreshed in every nginx before the call that made it answers, and
// reported. A change learned from the cluster, which no caller waits for, is
// queued for Run instead.
func (r *Refresher) Committed(ctx context.Context, ch engine.Change, now time.Time) engine.Receipt {
	var changed []netip.Prefix
	if b := ch.Ban; b != nil {
		changed = append(changed, b.Key)
		for _, e := range ch.Evicted {
			if e.Active(now) { // an active ban evicted for room: its 403 is no longer right
				changed = append(changed, e.Key)
			}
		}
	}
	for _, b := range ch.Lifted {
		changed = append(changed, b.Key)
	}
	var rc engine.Receipt
	if len(changed) == 0 {
		return rc
	}
	if ch.Source == engine.SourceCluster {
		for _, p := range changed {
			if !r.learned.Put(p) {
				r.failed("", Key{}, fmt.Errorf("%d changes learned from the cluster wait already; %s not refreshed", learnedQueue, p))
			}
		}
		return rc
	}
	var named []netip.Addr
	if a, err := netip.ParseAddr(ch.IP); err == nil { // the address the change names, not a range
		named = append(named, a)
	}
	rc.Report(Report, r.Refresh(ctx, changed, named...))
	return rc
}

var _ engine.Hook = (*Refresher)(nil)
