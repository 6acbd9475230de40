package engine

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
)

// Local is the ban service the listeners use: memory (decide.Core and decide.Accounts), a Backend
// that decides counts and bans (Memory, or a shared one set with
// UseBackend), and the state file when there is one. Every change a backend
// makes is booked by commit, the one write path.
type Local struct {
	core     *decide.Core
	mem      *Memory
	backend  Backend
	store    *store.Store // nil: memory only
	log      *slog.Logger
	m        *Metrics
	evict    evictionLog
	events   []func(Event)
	hooks    []Hook
	history  *History  // nil: no event history
	accounts *Accounts // nil until NewAccounts
	saved    savedBans
	// failLog writes the failure lines: at most FailureLinesPerSecond a
	// second at info, the rest at debug, summed up at info every
	// FailureSummaryEvery.
	failLog FailureLog
}

// NewLocal returns the service over core, with the Memory backend; st may
// be nil (memory only).
func NewLocal(core *decide.Core, st *store.Store, log *slog.Logger, m *Metrics) *Local {
	mem := &Memory{core: core}
	return &Local{core: core, mem: mem, backend: mem, store: st, log: log, m: m, saved: newSavedBans(4096), evict: newEvictionLog()}
}

// UseBackend makes b decide counts and bans (cluster mode); call it before
// serving.
func (l *Local) UseBackend(b Backend) { l.backend = b }

// Memory is this doorman's memory, for a shared backend: what it changes,
// and its fallback.
func (l *Local) Memory() *Memory { return l.mem }

// Metrics returns the service's metrics, for the listeners' own series.
func (l *Local) Metrics() *Metrics { return l.m }

// Decide is the verdict for a at now, from memory whatever the backend; it
// does not allocate.
func (l *Local) Decide(a netip.Addr, now time.Time) decide.Verdict { return l.core.Decide(a, now) }

// Fail counts a failed login from a; user is the normalised username the
// failure line names ("" when none was given).
func (l *Local) Fail(ctx context.Context, a netip.Addr, user string, now time.Time) (Failed, error) {
	res, ch := l.backend.Fail(ctx, a, now)
	ch.User = user
	r, err := l.commit(ctx, ch, now)
	return Failed{res, r}, err
}

// Succeed forgets the failures of a's unit; it returns the cleaned address
// and its unit.
func (l *Local) Succeed(ctx context.Context, a netip.Addr, now time.Time) (netip.Addr, netip.Prefix, error) {
	a, key := l.backend.Succeed(ctx, a, now)
	l.m.Successes.Inc()
	return a, key, nil
}

// Ban makes a manual ban of p: an address bans its unit, a range exactly
// that range; d 0 escalates.
func (l *Local) Ban(ctx context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (Banned, error) {
	b, ch, err := l.backend.Ban(ctx, p, d, note, now)
	if err != nil {
		return Banned{Ban: b}, err
	}
	r, err := l.commit(ctx, ch, now)
	return Banned{b, r}, err
}

// Unban lifts every ban covering a, and returns the records lifted, active
// or expired.
func (l *Local) Unban(ctx context.Context, a netip.Addr, now time.Time) (Lifted, error) {
	ch := l.backend.Unban(ctx, a, now)
	r, err := l.commit(ctx, ch, now)
	return Lifted{ch.Lifted, r}, err
}

// Remove lifts exactly the ban held under p.
func (l *Local) Remove(ctx context.Context, p netip.Prefix, now time.Time) (Lifted, error) {
	ch := l.backend.Remove(ctx, p, now)
	if len(ch.Lifted) == 0 {
		return Lifted{}, nil
	}
	r, err := l.commit(ctx, ch, now)
	return Lifted{ch.Lifted, r}, err
}

// Lift is Remove when p is valid (exactly a CIDR ban), else Unban of a: an
// unban target as the API, the status page and the CLI name it
// (api.ParseUnban).
func (l *Local) Lift(ctx context.Context, a netip.Addr, p netip.Prefix, now time.Time) (Lifted, error) {
	if p.IsValid() {
		return l.Remove(ctx, p, now)
	}
	return l.Unban(ctx, a, now)
}

// Explain is the verdict for a with its failure count, counting nothing;
// the count is the backend's (cluster-wide in cluster mode).
func (l *Local) Explain(ctx context.Context, a netip.Addr, now time.Time) Explanation {
	v := l.core.Decide(a, now)
	return Explanation{Addr: l.core.Addr(a), Verdict: v, Failures: l.backend.Failures(ctx, a, now)}
}

// Bans are the bans in force at now, oldest first.
func (l *Local) Bans(now time.Time) []decide.Ban { return l.core.Bans(now) }

// Stats sums up the tables at now.
func (l *Local) Stats(now time.Time) decide.Stats { return l.core.Stats(now) }

// SetLists swaps in reloaded lists.
func (l *Local) SetLists(lists *decide.Lists) { l.core.SetLists(lists) }
