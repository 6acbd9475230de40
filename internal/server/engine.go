package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
)

// Backend records failures, successes and bans. Local keeps them in this
// process (and its state file); the cluster backend shares them through Redis.
// Every method returns only once a ban it made is in force for Decide and, when
// there is a state file, on disk.
type Backend interface {
	Fail(ctx context.Context, a netip.Addr, now time.Time) (decide.FailResult, error)
	Succeed(ctx context.Context, a netip.Addr, now time.Time) error
	Ban(ctx context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (decide.Ban, error)
	Unban(ctx context.Context, a netip.Addr, now time.Time) ([]decide.Ban, error)
	Remove(ctx context.Context, p netip.Prefix, now time.Time) (decide.Ban, bool, error)
	// Failures returns the failures counted for a's unit within the window.
	Failures(ctx context.Context, a netip.Addr, now time.Time) int
}

// Local is the single-instance Backend: the Core, plus the store when set.
type Local struct {
	Core    *decide.Core
	Store   *store.Store // nil: memory only
	Log     *slog.Logger
	Metrics *Metrics

	evMu   sync.Mutex
	evLast map[string]time.Time // per table: when an eviction was last logged
	evSkip map[string]int
}

// Fail implements Backend.
func (l *Local) Fail(_ context.Context, a netip.Addr, now time.Time) (decide.FailResult, error) {
	res := l.Core.Fail(a, now)
	l.Metrics.Failures.Inc()
	if res.TrackerEvicted {
		l.Metrics.EvictedTrack.Inc()
		l.evicted("failures", netip.Prefix{}, now)
	}
	if !res.Banned {
		return res, nil
	}
	l.Metrics.BansFailures.Inc()
	l.LogBan(decide.Clean(a).String(), res.Ban, now, "")
	return res, l.Recorded(res.Ban, res.Evicted, now)
}

// Succeed implements Backend.
func (l *Local) Succeed(_ context.Context, a netip.Addr, _ time.Time) error {
	l.Core.Succeed(a)
	l.Metrics.Successes.Inc()
	return nil
}

// Ban implements Backend.
func (l *Local) Ban(_ context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (decide.Ban, error) {
	b, evicted, err := l.Core.BanPrefix(p, d, note, now)
	if err != nil {
		return b, err
	}
	l.Metrics.BansManual.Inc()
	ip := p.String()
	if p.IsSingleIP() {
		ip = p.Addr().String()
	}
	l.LogBan(ip, b, now, "")
	return b, l.Recorded(b, evicted, now)
}

// Unban implements Backend.
func (l *Local) Unban(_ context.Context, a netip.Addr, now time.Time) ([]decide.Ban, error) {
	lifted := l.Core.Unban(a)
	return lifted, l.Forgotten(decide.Clean(a).String(), lifted, now, "")
}

// Remove implements Backend.
func (l *Local) Remove(_ context.Context, p netip.Prefix, now time.Time) (decide.Ban, bool, error) {
	b, ok := l.Core.Remove(p)
	if !ok {
		return b, false, nil
	}
	return b, true, l.Forgotten(p.String(), []decide.Ban{b}, now, "")
}

// Failures implements Backend.
func (l *Local) Failures(_ context.Context, a netip.Addr, now time.Time) int {
	return l.Core.Failures(a, now)
}

// Recorded persists a ban already applied to the Core and drops evicted records.
func (l *Local) Recorded(b decide.Ban, evicted []decide.Ban, now time.Time) error {
	for _, e := range evicted {
		l.Metrics.EvictedBans.Inc()
		l.evicted("bans", e.Key, now)
	}
	if l.Store == nil {
		return nil
	}
	err := l.Store.Put(b)
	if err == nil && len(evicted) > 0 {
		keys := make([]netip.Prefix, len(evicted))
		for i, e := range evicted {
			keys[i] = e.Key
		}
		err = l.Store.Delete(keys...)
	}
	if err != nil {
		l.Metrics.StoreErrors.Inc()
		l.Log.Error("state file write failed", "file", l.Store.Path(), "err", err)
		return fmt.Errorf("ban is in force but was not saved: %w", err)
	}
	return nil
}

// Forgotten logs lifted bans and deletes them from the store.
func (l *Local) Forgotten(ip string, lifted []decide.Ban, now time.Time, source string) error {
	keys := make([]netip.Prefix, 0, len(lifted))
	for _, b := range lifted {
		keys = append(keys, b.Key)
		l.Metrics.Unbans.Inc()
		attrs := []any{"ip", ip, "key", b.Key.String(), "active", b.Active(now)}
		if source != "" {
			attrs = append(attrs, "source", source)
		}
		l.Log.Info("unban", attrs...)
	}
	if l.Store == nil || len(keys) == 0 {
		return nil
	}
	if err := l.Store.Delete(keys...); err != nil {
		l.Metrics.StoreErrors.Inc()
		l.Log.Error("state file write failed", "file", l.Store.Path(), "err", err)
		return fmt.Errorf("ban is lifted but the state file was not updated: %w", err)
	}
	return nil
}

// LogBan writes the ban line that the shipped fail2ban filter matches:
// msg=ban ip=… key=… until=… failures=… at warn level.
func (l *Local) LogBan(ip string, b decide.Ban, now time.Time, source string) {
	attrs := []any{"ip", ip, "key", b.Key.String(), "until", b.Until.Format(time.RFC3339),
		"failures", b.Failures, "count", b.Count, "reason", b.Reason(),
		"duration", b.Until.Sub(now).Round(time.Second).String()}
	if b.Note != "" {
		attrs = append(attrs, "note", b.Note)
	}
	if source != "" {
		attrs = append(attrs, "source", source)
	}
	l.Log.Warn("ban", attrs...)
}

// evicted logs an eviction at warn level, at most once a minute per table,
// with the number not logged since: under attack they come by the thousand.
func (l *Local) evicted(table string, key netip.Prefix, now time.Time) {
	l.evMu.Lock()
	defer l.evMu.Unlock()
	if l.evLast == nil {
		l.evLast, l.evSkip = map[string]time.Time{}, map[string]int{}
	}
	if now.Sub(l.evLast[table]) < time.Minute {
		l.evSkip[table]++
		return
	}
	attrs := []any{"table", table, "since_last_logged", l.evSkip[table]}
	if key.IsValid() {
		attrs = append(attrs, "key", key.String())
	}
	l.Log.Warn("eviction: table full, oldest entry dropped", attrs...)
	l.evLast[table], l.evSkip[table] = now, 0
}
