package engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
)

// DeviceToken is a token issued at a successful login.
type DeviceToken struct {
	Token   string
	Expires time.Time
}

// Accounts is the account side of the service, beside Local: failed logins
// counted per account (normalised username) across every address, locks, and
// the device tokens that keep an account's own users out of its lock.
// Usernames given to it are normalised (decide.NormalizeUsername) and not
// empty; tokens may be empty. It holds decide.Accounts, the
// device key, and the state file when there is one. A lock is written and
// fsynced before the failure that made it is answered, as bans are; token
// failures are kept in memory only (a crash gives a token at most
// DOORMAN_DEVICE_MAX_FAILURES more tries). It is safe for concurrent use.
type Accounts struct {
	acc   *decide.Accounts
	key   atomic.Pointer[deviceKey] // nil with accounts off
	ttl   time.Duration
	store *store.Store
	local *Local // the log, the eviction warnings and the event observers
	m     accountMetrics
}

type accountMetrics struct {
	failures, deviceFailures, locks, unlocks, devices *metrics.Counter
	evicted                                           map[string]*metrics.Counter // by table/kind
	attempts                                          map[string]*metrics.Counter // by result
}

// AccountResults are the results /v1/attempts counts: allow, or the reason
// of a refusal.
func AccountResults() []string {
	out := []string{"allow", decide.AccountLocked.String(), decide.DeviceLocked.String()}
	for _, r := range decide.Reasons() {
		if r != decide.Allowed {
			out = append(out, r.String())
		}
	}
	return out
}

// AccountOptions configure NewAccounts.
type AccountOptions struct {
	Policy decide.AccountPolicy
	Max    int           // DOORMAN_MAX_ACCOUNTS
	Key    []byte        // DOORMAN_DEVICE_KEY; empty: the state file's, or a new one
	TTL    time.Duration // DOORMAN_DEVICE_TTL
	Store  *store.Store  // nil: memory only
	Now    func() time.Time
}

// NewAccounts returns the account service beside local. With accounts on,
// the device key is o.Key, else the one kept in the state file, else a new
// random one, written there (fsync) before any token is signed with it;
// without a state file a new key lives for this process only. Locks kept in
// the state file are loaded. The account series are registered with local's
// metrics. It returns where the key came from, for the start line.
func NewAccounts(o AccountOptions, local *Local) (*Accounts, string, error) {
	a := &Accounts{acc: decide.NewAccounts(o.Policy, o.Max), ttl: o.TTL, store: o.Store, local: local}
	local.accounts, local.mem.acc = a, a.acc
	a.register(local.m.Set(), o.Now)
	if !a.acc.Enabled() {
		return a, "", nil
	}
	key, src := o.Key, "DOORMAN_DEVICE_KEY"
	if len(key) == 0 {
		var err error
		if key, src, err = newDeviceKey(o.Store); err != nil {
			return nil, "", err
		}
	}
	k, err := decide.NewDeviceKey(key)
	if err != nil {
		return nil, "", fmt.Errorf("DOORMAN_DEVICE_KEY: %v", err)
	}
	a.key.Store(&deviceKey{raw: key, k: k, fromConfig: len(o.Key) > 0})
	if o.Store != nil {
		if err := a.restore(o.Now()); err != nil {
			return nil, "", err
		}
	}
	return a, src, nil
}

// deviceKey is the key tokens are signed with, and its bytes.
type deviceKey struct {
	raw        []byte
	k          *decide.DeviceKey
	fromConfig bool // DOORMAN_DEVICE_KEY: never replaced
}

// Key returns the device key's bytes and whether it came from
// DOORMAN_DEVICE_KEY; nil with accounts off. For cluster mode, which shares
// one key between every doorman.
func (a *Accounts) Key() (raw []byte, fromConfig bool) {
	k := a.key.Load()
	if k == nil {
		return nil, false
	}
	return k.raw, k.fromConfig
}

// UseKey replaces the device key with the one the cluster shares: it is kept
// in the state file (fsync) first, and tokens signed with the old one stop
// being valid. A key from DOORMAN_DEVICE_KEY is never replaced.
func (a *Accounts) UseKey(raw []byte) error {
	old := a.key.Load()
	if old == nil || old.fromConfig || bytes.Equal(old.raw, raw) {
		return nil
	}
	k, err := decide.NewDeviceKey(raw)
	if err != nil {
		return err
	}
	if a.store != nil {
		if err := a.store.SetDeviceKey(raw); err != nil {
			return fmt.Errorf("state file %s: keeping the cluster's device key: %w", a.store.Path(), err)
		}
	}
	a.key.Store(&deviceKey{raw: raw, k: k})
	a.local.log.Warn("device key replaced by the cluster's; tokens this doorman issued before are no longer valid")
	return nil
}

// newDeviceKey is the state file's key, or a new one kept there.
func newDeviceKey(st *store.Store) ([]byte, string, error) {
	k := make([]byte, decide.DeviceKeyMin)
	if _, err := rand.Read(k); err != nil {
		return nil, "", err
	}
	if st == nil {
		return k, "generated for this process (no state file: tokens end at restart)", nil
	}
	old, err := st.DeviceKey()
	if err != nil {
		return nil, "", fmt.Errorf("state file %s: reading the device key: %w", st.Path(), err)
	}
	if old != nil {
		return old, "state file", nil
	}
	if err := st.PutDeviceKey(k); err != nil {
		return nil, "", fmt.Errorf("state file %s: keeping a new device key: %w", st.Path(), err)
	}
	return k, "generated, kept in the state file", nil
}

func (a *Accounts) register(s *metrics.Set, now func() time.Time) {
	a.m.failures = s.NewCounter("doorman_account_failures_total")
	a.m.deviceFailures = s.NewCounter("doorman_account_device_failures_total")
	a.m.locks = s.NewCounter("doorman_account_locks_issued_total")
	a.m.unlocks = s.NewCounter("doorman_account_unlocks_total")
	a.m.devices = s.NewCounter("doorman_account_devices_issued_total")
	a.m.evicted = map[string]*metrics.Counter{}
	for _, table := range []string{"accounts", "devices"} {
		for _, kind := range []string{"unlocked", "locked"} {
			a.m.evicted[table+"/"+kind] = s.NewCounter(`doorman_account_evictions_total{table="` + table + `",kind="` + kind + `"}`)
		}
	}
	a.m.attempts = map[string]*metrics.Counter{}
	for _, r := range AccountResults() {
		a.m.attempts[r] = s.NewCounter(`doorman_account_attempts_total{result="` + r + `"}`)
	}
	s.NewGauge("doorman_account_locks_active", func() float64 { return float64(a.acc.Stats(now()).Locked) })
	s.NewGauge("doorman_account_tracked", func() float64 { return float64(a.acc.Stats(now()).Tracked) })
	s.NewGauge("doorman_account_devices_tracked", func() float64 { return float64(a.acc.Stats(now()).Devices) })
}

// restore loads the state file's locks, oldest first, so that a table
// smaller than the file keeps the newest; those it evicts are deleted.
func (a *Accounts) restore(now time.Time) error {
	locks, err := a.store.LoadLocks(now, a.acc.Policy().MaxLockTime)
	if err != nil {
		return err
	}
	slices.SortFunc(locks, func(x, y decide.Lock) int { return x.Until.Compare(y.Until) })
	var drop []string
	for _, l := range locks {
		for _, e := range a.acc.Apply(l, now) {
			drop = append(drop, e.Username)
		}
	}
	if err := a.persist(drop, now); err != nil {
		return err
	}
	a.local.log.Info("account locks loaded", "records", len(locks), "active", a.acc.Stats(now).Locked)
	return nil
}

// Enabled reports whether accounts are counted at all
// (DOORMAN_ACCOUNT_MAX_FAILURES > 0).
func (a *Accounts) Enabled() bool { return a.acc.Enabled() }

// Device verifies token for user at now. An empty or bad token proves
// nothing; it is never an error.
func (a *Accounts) Device(user, token string, now time.Time) decide.Device {
	k := a.key.Load()
	if token == "" || k == nil {
		return decide.Device{}
	}
	id, err := k.k.Verify(token, user, now)
	return decide.Device{ID: id, Valid: err == nil}
}

// Attempt is the pre-authentication verdict for user with token, counting
// nothing.
func (a *Accounts) Attempt(user, token string, now time.Time) decide.Attempt {
	return a.acc.Check(user, a.Device(user, token, now), now)
}

// CountAttempt counts one /v1/attempts answer: "allow" or the reason of the
// refusal (the address's or the account's).
func (a *Accounts) CountAttempt(result string) {
	if c := a.m.attempts[result]; c != nil {
		c.Inc()
	}
}

// FailAccount counts a failed login of user; the token presented, when valid
// for user, takes the failure instead.
func (a *Accounts) FailAccount(ctx context.Context, user, token string, now time.Time) (decide.AccountResult, error) {
	res, ch := a.local.backend.FailAccount(ctx, user, a.Device(user, token, now), now)
	_, err := a.local.commit(ctx, ch, now)
	return res, err
}

// SucceedAccount records a successful login of user and issues a device
// token for it. A success does not unlock the account.
func (a *Accounts) SucceedAccount(ctx context.Context, user, token string, now time.Time) (DeviceToken, error) {
	if !a.acc.Enabled() {
		return DeviceToken{}, nil
	}
	a.local.backend.SucceedAccount(ctx, user, a.Device(user, token, now), now)
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return DeviceToken{}, err
	}
	exp := now.Add(a.ttl).Truncate(time.Second)
	a.m.devices.Inc()
	a.local.log.Debug("device token issued", "username", user, "expires", exp.Format(time.RFC3339))
	return DeviceToken{Token: a.key.Load().k.Issue(user, exp, nonce), Expires: exp.UTC()}, nil
}

// Locks are the locks in force at now, the soonest to end first.
func (a *Accounts) Locks(now time.Time) []decide.Lock { return a.acc.Locks(now) }

// Unlock forgets user: failures, lock and escalation.
func (a *Accounts) Unlock(ctx context.Context, user string, now time.Time) (Unlocked, error) {
	l, ok, ch := a.local.backend.Unlock(ctx, user, now)
	if !ok {
		return Unlocked{Lock: l}, nil
	}
	r, err := a.local.commit(ctx, ch, now)
	return Unlocked{Lock: l, Found: true, Receipt: r}, err
}

// persist writes what memory holds now for users: a lock (or a lock count
// still remembered), else nothing; fsync before returning.
func (a *Accounts) persist(users []string, now time.Time) error {
	if a.store == nil || len(users) == 0 {
		return nil
	}
	if err := a.store.SyncLocks(users, a.current(now)); err != nil {
		a.local.m.StoreErrors.Inc()
		a.local.log.Error("state file write failed", "file", a.store.Path(), "err", err)
		return fmt.Errorf("%w: %v", ErrNotSaved, err)
	}
	return nil
}

// current reports the record the state file keeps for an account at now: a
// lock, or a lock count still remembered; false: none.
func (a *Accounts) current(now time.Time) func(string) (decide.Lock, bool) {
	return func(u string) (decide.Lock, bool) {
		l, _, found := a.acc.Status(u, now)
		return l, found && l.Count > 0 && !l.Until.IsZero()
	}
}

// Subject is what an event is about, as logs, the history and
// notifications write it: the account for locks, else the ban's key.
func (e Event) Subject() string {
	if e.Account != "" {
		return e.Account
	}
	return e.Key.String()
}

// LogValue keeps a token out of any log line that would print a DeviceToken.
func (t DeviceToken) LogValue() slog.Value {
	return slog.GroupValue(slog.String("expires", t.Expires.Format(time.RFC3339)))
}
