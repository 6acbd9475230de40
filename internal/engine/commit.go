package engine

import (
	"context"
	"net/netip"
	"time"

	"github.com/doorman/doorman/decide"
)

// Sources of a change, as the logs and events name them.
const (
	SourceFailures = "failures" // the webhook's failures
	SourceManual   = "manual"   // an operator, through the API
	SourceCluster  = "cluster"  // learned from another instance
)

// Change is what one operation did to memory — a failure counted, bans put
// or lifted, locks made or forgotten — for commit to book. The memory
// operations (decide.Core's, decide.Accounts', or a shared backend's) make
// the change; commit does everything else, so no path can forget a step.
type Change struct {
	Source string // SourceFailures, SourceManual or SourceCluster
	// IP is the address or range the change was made for, as logged; the
	// key of the ban when empty.
	IP string

	// Failure: one failure was counted (its metric and its failure line),
	// with what counting it did to the tables; Key, Failures and User are
	// the line's fields.
	Failure        bool
	Key            netip.Prefix // the failure's ban unit
	Failures       int          // the unit's failures within the window
	User           string       // the username given, if any
	TrackerEvicted bool         // the failure tracker dropped an entry for it
	Refused        netip.Prefix // a ban the full table refused (zero: none)

	Ban     *decide.Ban  // a ban put in force
	Evicted []decide.Ban // records evicted for it
	Folded  []decide.Ban // unit records a range ban replaced
	Lifted  []decide.Ban // records removed
	// Saved is a ban in force made by another call that an answer is about
	// to report: it must be on disk first.
	Saved *decide.Ban

	// Account is an account failure counted in memory (nil: none).
	Account *decide.AccountResult
	Lock    *decide.Lock // a lock put in force
	Unlock  *decide.Lock // an account forgotten
	// Users are accounts whose records are written as memory holds them,
	// besides those of Lock and Unlock.
	Users []string

	// Reports are what the backend says of the change (ReportShared), the
	// first reports of its receipt.
	Reports Receipt
}

// commit books ch, a change already in force in memory: metrics, the
// failure, ban, unban, lock and unlock lines, the state file (the ban and account records
// memory holds now and the history entries, in one transaction fsynced
// before it returns), the events with their kind, and the hooks, whose
// reports make the receipt. It is the only
// place that does any of these. An error wraps ErrNotSaved: the change holds
// but was not written.
func (l *Local) commit(ctx context.Context, ch Change, now time.Time) (Receipt, error) {
	var evs []Event
	var keys []netip.Prefix
	l.countFailure(ch, now)
	if b := ch.Ban; b != nil {
		keys = append(keys, l.bookBan(ch, *b, now)...)
		evs = append(evs, Event{Time: now, Type: EventBan, Key: b.Key, IP: ch.ip(b.Key), Until: b.Until, Reason: b.Reason(), Count: b.Count, Source: ch.Source})
	}
	for _, b := range ch.Lifted {
		keys = append(keys, b.Key)
		l.m.Unbans.Inc()
		attrs := []any{"ip", ch.ip(b.Key), "key", b.Key.String(), "active", b.Active(now)}
		if ch.Source == SourceCluster {
			attrs = append(attrs, "source", ch.Source)
		}
		l.log.Info("unban", attrs...)
		evs = append(evs, Event{Time: now, Type: EventUnban, Key: b.Key, IP: ch.ip(b.Key), Until: b.Until, Reason: b.Reason(), Count: b.Count, Source: ch.Source})
	}
	if ch.Saved != nil && !l.saved.has(*ch.Saved) {
		keys = append(keys, ch.Saved.Key)
	}
	var users []string
	if a := l.accounts; a != nil {
		var aevs []Event
		aevs, users = a.book(ch, now)
		evs = append(evs, aevs...)
	}
	err := l.persist(keys, users, evs, now)
	if err == nil {
		for _, b := range []*decide.Ban{ch.Ban, ch.Saved} {
			if b != nil {
				l.saved.add(*b)
			}
		}
	}
	for _, e := range evs {
		l.emit(e)
	}
	var r Receipt
	r.Merge(ch.Reports)
	if len(evs) > 0 {
		for _, h := range l.hooks {
			r.Merge(h.Committed(ctx, ch, now))
		}
	}
	return r, err
}

// Learn books a change learned from another instance, already in force in
// memory: commit with the source cluster and no caller waiting. An error is
// logged and counted; the next write of the key stores it.
func (l *Local) Learn(ch Change, now time.Time) {
	ch.Source = SourceCluster
	l.commit(context.Background(), ch, now)
}

// ip is how ch names the ban under key in its lines and events.
func (ch Change) ip(key netip.Prefix) string {
	if ch.IP != "" {
		return ch.IP
	}
	return IP(key)
}

// countFailure counts the failure ch counted, if any, and what it did to the
// tables.
func (l *Local) countFailure(ch Change, now time.Time) {
	if ch.Failure {
		l.m.Failures.Inc()
		l.failLog.Log(l.log, now, ch.Key, "ip", ch.IP, "key", ch.Key.String(), "username", ch.User, "failures", ch.Failures)
	}
	if ch.TrackerEvicted {
		l.m.EvictedTrack.Inc()
		l.evict.log(l, "failures", "", netip.Prefix{}, now)
	}
	if ch.Refused.IsValid() {
		l.m.BansRefused.Inc()
		l.evict.log(l, "bans", "refused", ch.Refused, now)
	}
}

// bookBan counts and logs the ban ch put, b, and the records it evicted and
// folded; it returns the keys whose records the state file takes.
func (l *Local) bookBan(ch Change, b decide.Ban, now time.Time) []netip.Prefix {
	for _, e := range ch.Evicted {
		if e.Active(now) {
			l.m.EvictedBans.Inc()
			l.evict.log(l, "bans", "active", e.Key, now)
		} else {
			l.m.EvictedStale.Inc()
			l.evict.log(l, "bans", "expired", e.Key, now)
		}
	}
	switch {
	case ch.Source == SourceCluster:
	case b.Range:
		l.m.BansRange.Inc()
	case ch.Source == SourceFailures:
		l.m.BansFailures.Inc()
	case ch.Source == SourceManual:
		l.m.BansManual.Inc()
	}
	l.logBan(ch.ip(b.Key), b, now, ch.Source)
	keys := make([]netip.Prefix, 0, 1+len(ch.Evicted)+len(ch.Folded))
	keys = append(keys, b.Key)
	for _, e := range ch.Evicted {
		keys = append(keys, e.Key)
	}
	for _, f := range ch.Folded {
		keys = append(keys, f.Key)
		l.log.Info("folded into range ban", "key", f.Key.String(), "range", b.Key.String())
	}
	return keys
}

// logBan writes the ban line that the shipped fail2ban filter matches:
// msg=ban ip=… key=… until=… failures=… at warn level. A change learned from
// the cluster says source=cluster.
func (l *Local) logBan(ip string, b decide.Ban, now time.Time, source string) {
	attrs := []any{"ip", ip, "key", b.Key.String(), "until", b.Until.Format(time.RFC3339),
		"failures", b.Failures, "count", b.Count, "reason", b.Reason(),
		"duration", b.Until.Sub(now).Round(time.Second).String()}
	if b.Note != "" {
		attrs = append(attrs, "note", b.Note)
	}
	if source == SourceCluster {
		attrs = append(attrs, "source", source)
	}
	l.log.Warn("ban", attrs...)
}

// book counts and logs the account side of ch; it returns its events and
// the accounts whose records the state file takes.
func (a *Accounts) book(ch Change, now time.Time) ([]Event, []string) {
	if res := ch.Account; res != nil {
		a.counted(*res, now)
	}
	users := ch.Users
	var evs []Event
	if lk := ch.Lock; lk != nil {
		if ch.Source != SourceCluster {
			a.m.locks.Inc()
		}
		attrs := []any{"username", lk.Username, "until", lk.Until.Format(time.RFC3339), "failures", lk.Failures,
			"count", lk.Count, "duration", lk.Until.Sub(now).Round(time.Second).String()}
		if ch.Source == SourceCluster {
			attrs = append(attrs, "source", ch.Source)
		}
		a.local.log.Warn("lock", attrs...)
		evs = append(evs, Event{Time: now, Type: EventLock, Account: lk.Username, Until: lk.Until, Reason: "failures", Count: lk.Count, Source: ch.Source})
		users = append(users, lk.Username)
	}
	if u := ch.Unlock; u != nil {
		a.m.unlocks.Inc()
		attrs := []any{"username", u.Username, "active", u.Active(now)}
		if ch.Source == SourceCluster {
			attrs = append(attrs, "source", ch.Source)
		}
		a.local.log.Info("unlock", attrs...)
		evs = append(evs, Event{Time: now, Type: EventUnlock, Account: u.Username, Until: u.Until, Count: u.Count, Source: ch.Source})
		users = append(users, u.Username)
	}
	return evs, users
}

// counted counts one account failure counted in memory: metrics, a device
// token that took it, evictions.
func (a *Accounts) counted(res decide.AccountResult, now time.Time) {
	if res.Device.Counted {
		a.m.deviceFailures.Inc()
		if res.Device.Locked && res.Device.Failures == a.acc.Policy().DeviceMaxFailures {
			a.local.log.Info("device token locked", "username", res.Username, "until", res.Device.Until.Format(time.RFC3339))
		}
	} else {
		a.m.failures.Inc()
	}
	for _, e := range res.Evicted {
		kind := "unlocked"
		if e.Locked {
			kind = "locked"
		}
		a.m.evicted[e.Table+"/"+kind].Inc()
		a.local.evict.log(a.local, e.Table, kind, netip.Prefix{}, now)
	}
}
