package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// Accounts is the engine.AccountService of cluster mode: failures of an
// account and of a device token are counted, and locks made, by one Lua
// script in Redis, so 2 failures through one doorman and 2 through another
// lock an account at 4; locks travel on the channel like bans and are
// reloaded at every resync; every doorman signs and verifies device tokens
// with the key Redis holds. Attempts are answered from memory. While Redis is
// unreachable it falls back to the wrapped engine.Accounts.
//
// Keys (the tag is a hash of the name, so no username can break the slot):
//
//	PREFIX afail:{H}  sorted set of the account's failure times; PX = find time
//	PREFIX alock:{H}  hash: until, count, failures, name; PX = lock + max lock time
//	PREFIX dfail:{H}  sorted set of a device token's failure times (H of its DeviceID)
//	PREFIX dlock:{H}  hash: until, count, failures, name (the DeviceID in hex)
//	PREFIX devicekey  the shared device key (hex), set once (SET NX)
type Accounts struct {
	c      *Cluster
	acc    *engine.Accounts
	outbox *outbox[string] // unlocks made while Redis was unreachable
}

// Accounts returns the cluster's account service over acc; call it before Run.
func (c *Cluster) Accounts(acc *engine.Accounts) *Accounts {
	a := &Accounts{c: c, acc: acc, outbox: newOutbox(maxOutbox, func(user string) {
		c.log.Warn("unlock queue full; oldest queued unlock dropped", "username", user, "max", maxOutbox)
	})}
	c.local.Metrics().Set().NewGauge("doorman_cluster_pending_unlocks", func() float64 { return float64(a.outbox.len()) })
	c.accounts.Store(a)
	return a
}

// Account message ops on the channel.
const (
	opLock   = "lock"   // Key: the username
	opUnlock = "unlock" // Key: the username
	opDLock  = "dlock"  // Key: the DeviceID in hex
	opDReset = "dreset" // Key: the DeviceID in hex: a success forgot its failures
)

// akeys are the fail, lock and unlock keys of an account ("a") or a device
// token ("d"), in the order the account scripts read them.
func (a *Accounts) akeys(kind, name string) []string {
	h := sha256.Sum256([]byte(name))
	tag := ":{" + hex.EncodeToString(h[:12]) + "}"
	p := a.c.keys.prefix
	return []string{p + kind + "fail" + tag, p + kind + "lock" + tag, p + kind + "unlock" + tag}
}

// count runs accountScript for an account ("a") or a device token ("d").
func (a *Accounts) count(ctx context.Context, kind, name string, add bool, now time.Time) ([]int64, error) {
	p := a.acc.Core().Policy()
	limit, lock, factor, maxLock, op := p.MaxFailures, p.LockTime, p.LockFactor, p.MaxLockTime, opLock
	if kind == "d" {
		limit, factor, maxLock, op = max(p.DeviceMaxFailures, 1), 1, p.LockTime, opDLock
	}
	c := a.c
	member := c.id + ":" + strconv.FormatUint(c.seq.Add(1), 36)
	r, err := accountScript.Run(ctx, c.rdb, a.akeys(kind, name), now.UnixMilli(), ms(p.FindTime), limit, member, flag(add),
		ms(lock), factor, ms(maxLock), c.keys.channel(), op, name, c.id).Int64Slice()
	if err == nil && len(r) != 5 {
		err = errOr(nil, len(r))
	}
	return r, err
}

// Enabled implements engine.AccountService.
func (a *Accounts) Enabled() bool { return a.acc.Enabled() }

// Attempt implements engine.AccountService: from memory, which holds every
// lock the cluster made.
func (a *Accounts) Attempt(user, token string, now time.Time) decide.Attempt {
	return a.acc.Attempt(user, token, now)
}

// CountAttempt implements engine.AccountService.
func (a *Accounts) CountAttempt(result string) { a.acc.CountAttempt(result) }

// Locks implements engine.AccountService.
func (a *Accounts) Locks(now time.Time) []decide.Lock { return a.acc.Locks(now) }

// FailAccount implements engine.AccountService: the failure is counted in
// Redis, against a valid token that is not locked, else against the account;
// a lock it makes is in force here, and written, before the answer.
func (a *Accounts) FailAccount(ctx context.Context, user, token string, now time.Time) (decide.AccountResult, error) {
	if !a.c.Up() || !a.Enabled() {
		return a.acc.FailAccount(ctx, user, token, now)
	}
	dev := a.acc.Device(user, token, now)
	res := decide.AccountResult{Username: user}
	if dev.Valid {
		id := hex.EncodeToString(dev.ID[:])
		r, err := a.count(ctx, "d", id, false, now)
		if err != nil {
			return a.fallback(ctx, err, user, token, now)
		}
		if r[1] == 0 { // the token is not locked: it takes the failure
			if r, err = a.count(ctx, "d", id, true, now); err != nil {
				return a.fallback(ctx, err, user, token, now)
			}
			res.Device = decide.DeviceResult{Counted: true, Failures: int(r[0]), Locked: r[1] == 1}
			if r[1] == 1 && a.c.admit(message{Op: opDLock, Key: id, Until: r[2]}, now) {
				res.Device.Until = time.UnixMilli(r[2]).UTC()
				a.acc.Core().ApplyDevice(dev.ID, res.Device.Until, now)
			} else {
				res.Device.Locked = false
			}
			st, err := a.count(ctx, "a", user, false, now)
			if err != nil {
				return a.fallback(ctx, err, user, token, now)
			}
			a.status(&res, st)
			_, err = a.c.local.Commit(ctx, engine.AccountChange(res), now)
			return res, err
		}
		res.Device = decide.DeviceResult{Failures: int(r[0]), Locked: true, Until: time.UnixMilli(r[2]).UTC()}
	}
	r, err := a.count(ctx, "a", user, true, now)
	if err != nil {
		return a.fallback(ctx, err, user, token, now)
	}
	a.status(&res, r)
	res.NewLock = r[4] == 1
	if res.Locked && !a.c.admit(message{Op: opLock, Key: user, Until: r[2]}, now) {
		// A lock Redis holds that ends later than any doorman makes one
		// (written there by hand): not in force here.
		res.Locked, res.NewLock, res.Until = false, false, time.Time{}
	}
	if res.Locked {
		// In force here before the answer: a lock this failure made, or one
		// Redis held that this doorman lacked.
		if l, locked, _ := a.acc.Core().Status(user, now); !locked || !l.Until.Equal(res.Until) {
			res.Evicted = a.acc.Core().Apply(res.Lock(), now)
		}
	}
	ch := engine.AccountChange(res)
	if res.Locked {
		ch.Users = append(ch.Users, user)
	}
	_, err = a.c.local.Commit(ctx, ch, now)
	return res, err
}

func (a *Accounts) status(res *decide.AccountResult, r []int64) {
	res.Failures, res.Locked, res.Count = int(r[0]), r[1] == 1, int(r[3])
	if res.Locked {
		res.Until = time.UnixMilli(r[2]).UTC()
	}
}

func (a *Accounts) fallback(ctx context.Context, err error, user, token string, now time.Time) (decide.AccountResult, error) {
	a.c.lost(fmt.Errorf("account script: %w", err))
	return a.acc.FailAccount(ctx, user, token, now)
}

// SucceedAccount implements engine.AccountService: the token's failures are
// forgotten here and in Redis, and a new token is signed with the shared key.
func (a *Accounts) SucceedAccount(ctx context.Context, user, token string, now time.Time) (engine.DeviceToken, error) {
	t, err := a.acc.SucceedAccount(ctx, user, token, now)
	if err != nil || !a.c.Up() || !a.Enabled() {
		return t, err
	}
	if dev := a.acc.Device(user, token, now); dev.Valid {
		id := hex.EncodeToString(dev.ID[:])
		msg, _ := jsonMessage(message{Op: opDReset, Key: id, Origin: a.c.id})
		_, err := a.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, a.akeys("d", id)...)
			p.Publish(ctx, a.c.keys.channel(), msg)
			return nil
		})
		if err != nil {
			a.c.lost(fmt.Errorf("device reset: %w", err))
		}
	}
	return t, nil
}

// Unlock implements engine.AccountService: forgotten here, then in Redis,
// leaving a tombstone. While Redis is unreachable the unlock is queued and
// replayed before the next resync loads locks; the receipt says it is not
// shared yet.
func (a *Accounts) Unlock(ctx context.Context, user string, now time.Time) (engine.Unlocked, error) {
	u, err := a.acc.Unlock(ctx, user, now)
	if !a.Enabled() {
		return u, err
	}
	c := a.c
	if c.Up() {
		held, rerr := unlockScript.Run(ctx, c.rdb, a.akeys("a", user), now.UnixMilli(), -1, u.Lock.Until.UnixMilli(),
			c.keys.channel(), user, c.id).Int64()
		if rerr == nil {
			u.Found = u.Found || held == 1 // locked in Redis, not (or no longer) here
			return u, err
		}
		c.lost(fmt.Errorf("unlock: %w", rerr))
	}
	if u.Found {
		a.outbox.put(user, pendingUnban{until: u.Lock.Until, at: now})
		u.Report(engine.ReportShared, false)
	}
	c.dirty.Store(true)
	return u, err
}

// replayUnlocks runs the unlocks queued while Redis was unreachable. A lock
// made in Redis after the unlock stays.
func (a *Accounts) replayUnlocks(ctx context.Context, now time.Time) error {
	c := a.c
	done, err := a.outbox.replay(ctx, func(user string, p pendingUnban) error {
		return unlockScript.Run(ctx, c.rdb, a.akeys("a", user), now.UnixMilli(), p.at.UnixMilli(), p.until.UnixMilli(),
			c.keys.channel(), user, c.id).Err()
	})
	if done > 0 {
		c.log.Info("unlocks made during the outage replayed", "count", done)
	}
	if err != nil {
		return fmt.Errorf("replaying unlocks: %w", err)
	}
	return nil
}
