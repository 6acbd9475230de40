package decide

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// AccountPolicy is what failures of one account lead to, across all the
// addresses they come from.
type AccountPolicy struct {
	MaxFailures int           // failures within FindTime that lock the account; 0 turns accounts off
	FindTime    time.Duration // the sliding window failures are counted in
	LockTime    time.Duration // the first lock's length
	LockFactor  float64       // each further lock lasts this much longer (DOORMAN_BAN_FACTOR)
	MaxLockTime time.Duration // cap on a lock; also how long an account's lock count is remembered after its lock ends (DOORMAN_MAX_BAN_TIME)
	// DeviceMaxFailures is how many failures a valid device token takes
	// before it exempts nothing, for LockTime.
	DeviceMaxFailures int
}

// AccountReason says why an attempt is refused.
type AccountReason uint8

const (
	AccountOpen   AccountReason = iota // not refused
	AccountLocked                      // the account is locked and no valid token exempts the client
	DeviceLocked                       // the account is locked and the client's token took too many failures
)

func (r AccountReason) String() string {
	return [...]string{"", "account-locked", "device-locked"}[r]
}

// Lock is an account's lock as the API, the store, the cluster and the logs
// see it.
type Lock struct {
	Username string    // normalised
	Until    time.Time // when it ends (or ended)
	Count    int       // how many times the account has been locked, for escalation
	Failures int       // failures within the window (at the lock: those that led to it)
}

// Active reports whether the lock is in force at now.
func (l Lock) Active(now time.Time) bool { return now.Before(l.Until) }

// Device is what a device token presented with a request proved. The caller
// verifies the token (DeviceKey.Verify) for the normalised username first.
type Device struct {
	ID    DeviceID
	Valid bool // the token is genuine, unexpired and for this account
}

// DeviceResult is what a failure did to the token presented with it.
type DeviceResult struct {
	Counted  bool      // the failure counted against the token, not the account
	Failures int       // the token's failures within the window
	Locked   bool      // the token exempts nothing until Until
	Until    time.Time // the end of the token's lock, when Locked
}

// AccountResult is what one failure did to its account.
type AccountResult struct {
	Username string
	Failures int       // the account's failures within the window
	Locked   bool      // the account is locked after this failure
	NewLock  bool      // this failure locked it
	Until    time.Time // the lock's end, when Locked
	Count    int       // the lock's count, when Locked
	Device   DeviceResult
	Evicted  []Evicted // entries dropped to make room
}

// Lock returns the account's lock, for the store and the log.
func (r AccountResult) Lock() Lock {
	return Lock{Username: r.Username, Until: r.Until, Count: r.Count, Failures: r.Failures}
}

// Evicted is an entry dropped from a full table.
type Evicted struct {
	Table    string // "accounts" or "devices"
	Username string // for accounts
	Locked   bool   // its lock was in force
	Count    int    // its lock count; a dropped account with one had a record in the store
}

// Attempt is the pre-authentication verdict for one account.
type Attempt struct {
	Allow  bool
	Reason AccountReason
	Until  time.Time // when the refusal ends, when not Allow
}

// Accounts counts failed logins per account (normalised username) across all
// addresses and locks an account after MaxFailures within FindTime, for
// LockTime × LockFactor^(n-1) up to MaxLockTime. A client presenting a valid
// device token for the account is not locked out: its failures count against
// the token, which exempts nothing after DeviceMaxFailures of them, until
// LockTime has passed.
//
// Accounts is safe for concurrent use; every method takes one mutex. Nothing
// in it does I/O or reads a clock. It holds at most max accounts and max
// device tokens (see lockTable for the eviction rule: least recently active
// first, a locked one last). Evictions are returned to the caller, to count
// and log. Tokens are never held: a token's state is keyed by its DeviceID,
// a hash.
//
// Memory: BenchmarkAccountMemory fills 100k accounts with one failure each
// (what a spray of invented usernames leaves) and measures about 150 bytes of
// heap per account: 64 for the slot (growing in place, with append's slack),
// about 40 for the map entry (a 24-byte slot at a load of 7/8 or less), 16
// for a username up to 16 bytes and 8 for the failure time. Each further
// remembered failure adds 8 bytes, so a full window at the default 10 adds 72.
type Accounts struct {
	policy  AccountPolicy
	mu      sync.Mutex
	users   *lockTable[string]
	devices *lockTable[DeviceID]
}

// NewAccounts returns an Accounts holding at most max accounts and max
// device tokens (max >= 1).
func NewAccounts(p AccountPolicy, max int) *Accounts {
	a := &Accounts{policy: p}
	if !a.Enabled() {
		return a
	}
	lock, maxLock := int64(p.LockTime), int64(p.MaxLockTime)
	a.users = newLockTable[string](max, p.MaxFailures, int64(p.FindTime), lock, maxLock, p.LockFactor)
	a.devices = newLockTable[DeviceID](max, max1(p.DeviceMaxFailures), int64(p.FindTime), lock, lock, 1)
	return a
}

func max1(n int) int { return max(n, 1) }

// Enabled reports whether accounts are counted (MaxFailures > 0).
func (a *Accounts) Enabled() bool { return a.policy.MaxFailures > 0 }

// Policy returns the policy the Accounts was built with.
func (a *Accounts) Policy() AccountPolicy { return a.policy }

// Fail records a failed login for user (normalised, not empty) at now. With
// a valid token the failure counts against the token while the token is not
// locked; otherwise against the account. When it is the MaxFailures-th within
// FindTime the account is locked before Fail returns.
func (a *Accounts) Fail(user string, dev Device, now time.Time) AccountResult {
	res := AccountResult{Username: user}
	if !a.Enabled() {
		return res
	}
	n := now.UnixNano()
	a.mu.Lock()
	defer a.mu.Unlock()
	if dev.Valid {
		f, _, until, _, _ := a.devices.status(dev.ID, n)
		if until <= n { // the token is not locked: it takes the failure
			f, ev := a.devices.fail(dev.ID, n)
			res.Device = DeviceResult{Counted: true, Failures: f.failures, Locked: f.locked}
			if f.locked {
				res.Device.Until = time.Unix(0, f.until).UTC()
			}
			for range ev {
				res.Evicted = append(res.Evicted, Evicted{Table: "devices"})
			}
			res.Failures, res.Locked, res.Until, res.Count = a.userStatus(user, n)
			return res
		}
		// The token is locked: it exempts nothing, the account takes the failure.
		res.Device = DeviceResult{Failures: f, Locked: true, Until: time.Unix(0, until).UTC()}
	}
	f, ev := a.users.fail(user, n)
	res.Failures, res.Locked, res.NewLock, res.Count = f.failures, f.locked, f.newLock, int(f.count)
	if f.locked {
		res.Until = time.Unix(0, f.until).UTC()
	}
	for _, e := range ev {
		res.Evicted = append(res.Evicted, Evicted{Table: "accounts", Username: e.key, Locked: e.locked, Count: int(e.count)})
	}
	return res
}

// userStatus is the account's failures and lock at n; the caller holds mu.
func (a *Accounts) userStatus(user string, n int64) (failures int, locked bool, until time.Time, count int) {
	f, locked, u, c, _ := a.users.status(user, n)
	if locked {
		until = time.Unix(0, u).UTC()
	}
	return f, locked, until, int(c)
}

// Check is the pre-authentication verdict for user (normalised, not empty)
// at now. It counts nothing.
func (a *Accounts) Check(user string, dev Device, now time.Time) Attempt {
	if !a.Enabled() {
		return Attempt{Allow: true}
	}
	n := now.UnixNano()
	a.mu.Lock()
	defer a.mu.Unlock()
	_, locked, until, _, _ := a.users.status(user, n)
	if !locked {
		return Attempt{Allow: true}
	}
	if !dev.Valid {
		return Attempt{Reason: AccountLocked, Until: time.Unix(0, until).UTC()}
	}
	if _, _, devUntil, _, _ := a.devices.status(dev.ID, n); devUntil > n {
		// The token exempts nothing until its lock or the account's ends.
		return Attempt{Reason: DeviceLocked, Until: time.Unix(0, min(devUntil, until)).UTC()}
	}
	return Attempt{Allow: true}
}

// Succeed records a successful login for user with dev: a valid token's
// failures are forgotten. The account's failures and lock stay: a success
// does not unlock the account for clients without a token.
func (a *Accounts) Succeed(user string, dev Device) {
	if !a.Enabled() || !dev.Valid {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.devices.remove(dev.ID)
}

// Status returns user's failures within the window and its lock at now.
// found is false when the account is not tracked.
func (a *Accounts) Status(user string, now time.Time) (l Lock, locked, found bool) {
	if !a.Enabled() {
		return Lock{Username: user}, false, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	f, locked, until, count, found := a.users.status(user, now.UnixNano())
	l = Lock{Username: user, Failures: f, Count: int(count)}
	if until > 0 {
		l.Until = time.Unix(0, until).UTC()
	}
	return l, locked, found
}

// Unlock forgets user entirely: its failures, its lock and its lock count,
// so its next lock starts again at LockTime. It returns the lock as it was
// and whether the account was tracked at all.
func (a *Accounts) Unlock(user string, now time.Time) (Lock, bool) {
	if !a.Enabled() {
		return Lock{}, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	f, _, _, _, _ := a.users.status(user, now.UnixNano())
	s, ok := a.users.remove(user)
	if !ok {
		return Lock{}, false
	}
	l := Lock{Username: user, Count: int(s.count), Failures: f}
	if s.until > 0 {
		l.Until = time.Unix(0, s.until).UTC()
	}
	return l, true
}

// Apply sets l as it is, with no escalation: for locks loaded from the store
// or learned from other instances. A lock that ended longer than MaxLockTime
// ago is ignored. It returns the entries evicted to make room.
func (a *Accounts) Apply(l Lock, now time.Time) []Evicted {
	if !a.Enabled() || l.Username == "" {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Evicted
	for _, e := range a.users.apply(l.Username, l.Until.UnixNano(), uint32(min(max(l.Count, 1), 1<<31)), now.UnixNano()) {
		out = append(out, Evicted{Table: "accounts", Username: e.key, Locked: e.locked, Count: int(e.count)})
	}
	return out
}

// ApplyDevice locks a token until until: for token locks learned from other
// instances.
func (a *Accounts) ApplyDevice(id DeviceID, until, now time.Time) []Evicted {
	if !a.Enabled() {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Evicted
	for range a.devices.apply(id, until.UnixNano(), 1, now.UnixNano()) {
		out = append(out, Evicted{Table: "devices"})
	}
	return out
}

// Locks returns the locks in force at now, the soonest to end first.
func (a *Accounts) Locks(now time.Time) []Lock {
	if !a.Enabled() {
		return nil
	}
	n := now.UnixNano()
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Lock
	for _, i := range a.users.heap.items {
		s := &a.users.slots[i]
		if s.until <= n {
			continue
		}
		f, _, _, _, _ := a.users.status(s.key, n)
		out = append(out, Lock{Username: s.key, Until: time.Unix(0, s.until).UTC(), Count: int(s.count), Failures: f})
	}
	slices.SortFunc(out, func(x, y Lock) int {
		return cmp.Or(x.Until.Compare(y.Until), cmp.Compare(x.Username, y.Username))
	})
	return out
}

// AccountStats is a snapshot of the Accounts' sizes, for metrics.
type AccountStats struct {
	Tracked int // accounts held
	Locked  int // locks in force
	Devices int // device tokens with failures or a lock
}

// Stats returns the sizes at now. It changes nothing.
func (a *Accounts) Stats(now time.Time) AccountStats {
	if !a.Enabled() {
		return AccountStats{}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return AccountStats{Tracked: len(a.users.index), Locked: a.users.lockedCount(now.UnixNano()), Devices: len(a.devices.index)}
}
