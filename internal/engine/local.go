package engine

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
)

// Local is the single-instance Service: the Core, plus the state file when
// there is one. Its exported memory operations (Apply, Take, Lift, …) are
// for a wrapper that shares state with other instances (cluster mode),
// which books what they did with Commit or Learn; they are not Service
// methods.
type Local struct {
	core     *decide.Core
	store    *store.Store // nil: memory only
	log      *slog.Logger
	m        *Metrics
	evict    evictionLog
	events   []func(Event)
	hooks    []Hook
	history  *History  // nil: no event history
	accounts *Accounts // nil until NewAccounts
	saved    savedBans
}

// NewLocal returns the service over core; st may be nil (memory only).
func NewLocal(core *decide.Core, st *store.Store, log *slog.Logger, m *Metrics) *Local {
	return &Local{core: core, store: st, log: log, m: m, saved: newSavedBans(4096), evict: newEvictionLog()}
}

// Metrics returns the service's metrics, for the listeners' own series.
func (l *Local) Metrics() *Metrics { return l.m }

// Decide implements Service.
func (l *Local) Decide(a netip.Addr, now time.Time) decide.Verdict { return l.core.Decide(a, now) }

// Fail implements Service.
func (l *Local) Fail(ctx context.Context, a netip.Addr, now time.Time) (Failed, error) {
	res := l.core.Fail(a, now)
	r, err := l.Commit(ctx, FailureChange(res), now)
	return Failed{res, r}, err
}

// FailureChange is the change res, a failure counted in memory, made: the
// ban it put, or the ban in force it is answered with (made by another
// call: it must be on disk before the answer says so).
func FailureChange(res decide.FailResult) Change {
	ch := Change{Source: SourceFailures, IP: res.Addr.String(), Failure: true, TrackerEvicted: res.TrackerEvicted}
	if res.Refused {
		ch.Refused = res.Key
	}
	switch {
	case res.Banned:
		ch.Ban, ch.Evicted, ch.Folded = &res.Ban, res.Evicted, res.Folded
	case res.InForce():
		ch.Saved = &res.Ban
	}
	return ch
}

// Succeed implements Service.
func (l *Local) Succeed(_ context.Context, a netip.Addr, _ time.Time) (netip.Addr, netip.Prefix, error) {
	a, key := l.core.Succeed(a)
	l.m.Successes.Inc()
	return a, key, nil
}

// Ban implements Service.
func (l *Local) Ban(ctx context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (Banned, error) {
	b, evicted, err := l.core.BanPrefix(p, d, note, now)
	if err != nil {
		return Banned{Ban: b}, err
	}
	r, err := l.Commit(ctx, Change{Source: SourceManual, IP: IP(p), Ban: &b, Evicted: evicted}, now)
	return Banned{b, r}, err
}

// Unban implements Service.
func (l *Local) Unban(ctx context.Context, a netip.Addr, now time.Time) (Lifted, error) {
	a, lifted := l.Lift(a)
	r, err := l.Commit(ctx, Change{Source: SourceManual, IP: a.String(), Lifted: lifted}, now)
	return Lifted{lifted, r}, err
}

// Remove implements Service.
func (l *Local) Remove(ctx context.Context, p netip.Prefix, now time.Time) (Lifted, error) {
	b, ok := l.core.Remove(p)
	if !ok {
		return Lifted{}, nil
	}
	lifted := []decide.Ban{b}
	r, err := l.Commit(ctx, Change{Source: SourceManual, IP: IP(p), Lifted: lifted}, now)
	return Lifted{lifted, r}, err
}

// Explain implements Service.
func (l *Local) Explain(_ context.Context, a netip.Addr, now time.Time) Explanation {
	v := l.core.Decide(a, now)
	return Explanation{Addr: l.core.Addr(a), Verdict: v, Failures: l.core.Failures(a, now)}
}

// Bans implements Service.
func (l *Local) Bans(now time.Time) []decide.Ban { return l.core.Bans(now) }

// Stats implements Service.
func (l *Local) Stats(now time.Time) decide.Stats { return l.core.Stats(now) }

// Memory operations for a wrapper. None of them logs or writes the state
// file: the wrapper books what they did with Commit or Learn, possibly
// later.

// Policy is the Core's ban policy.
func (l *Local) Policy() decide.Policy { return l.core.Policy() }

// Unit is the ban unit of a.
func (l *Local) Unit(a netip.Addr) netip.Prefix { return l.core.Unit(a) }

// Addr is a as the Core judges it (unmapped, NAT64 translated).
func (l *Local) Addr(a netip.Addr) netip.Addr { return l.core.Addr(a) }

// Normalize is the key a ban of p is held under.
func (l *Local) Normalize(p netip.Prefix) netip.Prefix { return l.core.Normalize(p) }

// NeverBan reports whether a is exempt from bans.
func (l *Local) NeverBan(a netip.Addr) bool { return l.core.Lists().NeverBan(l.core.Addr(a)) }

// Record is the record held under exactly p, active or expired.
func (l *Local) Record(p netip.Prefix) (decide.Ban, bool) { return l.core.Record(p) }

// Records are every record held, expired ones included.
func (l *Local) Records(now time.Time) []decide.Ban { return l.core.Records(now) }

// Apply puts b in force as it is; see decide.Core.Apply.
func (l *Local) Apply(b decide.Ban, now time.Time) ([]decide.Ban, error) { return l.core.Apply(b, now) }

// Escalate counts a failure ban made elsewhere toward its range; see
// decide.Core.Escalate.
func (l *Local) Escalate(a netip.Addr, unit decide.Ban, now time.Time) decide.FailResult {
	return l.core.Escalate(a, unit, now)
}

// Take removes the record under exactly p from memory.
func (l *Local) Take(p netip.Prefix) (decide.Ban, bool) { return l.core.Remove(p) }

// Lift removes every ban covering a from memory and forgets its failures; it
// returns the cleaned address and the records removed.
func (l *Local) Lift(a netip.Addr) (netip.Addr, []decide.Ban) {
	return l.core.Addr(a), l.core.Unban(a)
}

// Forget forgets the failures of a's unit.
func (l *Local) Forget(a netip.Addr) { l.core.Succeed(a) }

// SetLists swaps in reloaded lists.
func (l *Local) SetLists(lists *decide.Lists) { l.core.SetLists(lists) }
