package engine

import (
	"context"
	"net/netip"
	"time"

	"github.com/doorman/doorman/decide"
)

// Backend is the seam between the service and where counts, bans and locks
// are decided: Memory, over decide.Core and decide.Accounts (one doorman), or
// a shared store (internal/cluster: Redis). A backend makes each change in
// this doorman's memory and returns it as a Change; the Local commits it, so
// a backend never books anything itself. Changes a backend learns from other
// doormen enter through Local.Learn. Usernames are normalised; dev is the
// verified device token of the request (decide.Device{} when none).
type Backend interface {
	Fail(ctx context.Context, a netip.Addr, now time.Time) (decide.FailResult, Change)
	Ban(ctx context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (decide.Ban, Change, error)
	// Unban lifts every ban covering a; Remove exactly the ban held under p.
	Unban(ctx context.Context, a netip.Addr, now time.Time) Change
	Remove(ctx context.Context, p netip.Prefix, now time.Time) Change
	// Succeed forgets the failures of a's unit; it returns the cleaned
	// address and its unit.
	Succeed(ctx context.Context, a netip.Addr, now time.Time) (netip.Addr, netip.Prefix)
	// Failures counts the failures of a's unit within the window, counting none.
	Failures(ctx context.Context, a netip.Addr, now time.Time) int

	FailAccount(ctx context.Context, user string, dev decide.Device, now time.Time) (decide.AccountResult, Change)
	SucceedAccount(ctx context.Context, user string, dev decide.Device, now time.Time)
	// Unlock forgets user; false: not tracked.
	Unlock(ctx context.Context, user string, now time.Time) (decide.Lock, bool, Change)
}

// Memory is the backend of a single doorman: decide's tables, nothing
// shared. A shared backend falls back to it while its store is unreachable,
// and changes this doorman's memory through Core and Accounts. Safe for
// concurrent use.
type Memory struct {
	core *decide.Core
	acc  *decide.Accounts // nil until NewAccounts
}

// Core is the ban side of the memory.
func (m *Memory) Core() *decide.Core { return m.core }

// Accounts is the account side of the memory.
func (m *Memory) Accounts() *decide.Accounts { return m.acc }

// Fail implements Backend.
func (m *Memory) Fail(_ context.Context, a netip.Addr, now time.Time) (decide.FailResult, Change) {
	res := m.core.Fail(a, now)
	return res, FailureChange(res)
}

// FailureChange is the change res, a failure counted in memory, made: the
// ban it put, or the ban in force it is answered with (made by another
// call: it must be on disk before the answer says so).
func FailureChange(res decide.FailResult) Change {
	ch := Change{Source: SourceFailures, IP: res.Addr.String(), Failure: true, Key: res.Key, Failures: res.Failures,
		TrackerEvicted: res.TrackerEvicted}
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

// Ban implements Backend.
func (m *Memory) Ban(_ context.Context, p netip.Prefix, d time.Duration, note string, now time.Time) (decide.Ban, Change, error) {
	b, evicted, err := m.core.BanPrefix(p, d, note, now)
	if err != nil {
		return b, Change{}, err
	}
	return b, Change{Source: SourceManual, IP: IP(p), Ban: &b, Evicted: evicted}, nil
}

// Unban implements Backend.
func (m *Memory) Unban(_ context.Context, a netip.Addr, _ time.Time) Change {
	return Change{Source: SourceManual, IP: m.core.Addr(a).String(), Lifted: m.core.Unban(a)}
}

// Remove implements Backend.
func (m *Memory) Remove(_ context.Context, p netip.Prefix, _ time.Time) Change {
	ch := Change{Source: SourceManual, IP: IP(p)}
	if b, ok := m.core.Remove(p); ok {
		ch.Lifted = []decide.Ban{b}
	}
	return ch
}

// Succeed implements Backend.
func (m *Memory) Succeed(_ context.Context, a netip.Addr, _ time.Time) (netip.Addr, netip.Prefix) {
	return m.core.Succeed(a)
}

// Failures implements Backend.
func (m *Memory) Failures(_ context.Context, a netip.Addr, now time.Time) int {
	return m.core.Failures(a, now)
}

// FailAccount implements Backend.
func (m *Memory) FailAccount(_ context.Context, user string, dev decide.Device, now time.Time) (decide.AccountResult, Change) {
	res := m.acc.Fail(user, dev, now)
	return res, AccountChange(res)
}

// AccountChange is the change res, an account failure counted in memory,
// made: the lock it put, and the records of the accounts it evicted.
func AccountChange(res decide.AccountResult) Change {
	ch := Change{Source: SourceFailures, Account: &res}
	if res.NewLock {
		l := res.Lock()
		ch.Lock = &l
	}
	for _, e := range res.Evicted {
		if e.Table == "accounts" && e.Count > 0 {
			ch.Users = append(ch.Users, e.Username)
		}
	}
	return ch
}

// SucceedAccount implements Backend.
func (m *Memory) SucceedAccount(_ context.Context, user string, dev decide.Device, _ time.Time) {
	m.acc.Succeed(user, dev)
}

// Unlock implements Backend.
func (m *Memory) Unlock(_ context.Context, user string, now time.Time) (decide.Lock, bool, Change) {
	l, ok := m.acc.Unlock(user, now)
	if !ok {
		return l, false, Change{}
	}
	return l, true, Change{Source: SourceManual, Unlock: &l}
}

var _ Backend = (*Memory)(nil)
