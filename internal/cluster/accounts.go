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

// Accounts is the account side of the cluster backend: failures of an
// account and of a device token are counted, and locks made, by one Lua
// script in Redis, so 2 failures through one doorman and 2 through another
// lock an account at 4; locks travel on the channel like bans and are
// reloaded at every resync; every doorman signs and verifies device tokens
// with the key Redis holds. Attempts are answered from memory. While Redis is
// unreachable the backend falls back to engine.Memory.
//
// Keys (the tag is a hash of the name, so no username can break the slot;
// accountscripts.go has the layout):
//
//	PREFIX afail:{H}    sorted set of the account's failure times; PX = find time
//	PREFIX alock:{H}    hash: until, at, count, failures, name; PX = lock + max lock time
//	PREFIX aunlock:{H}  tombstone of the last lock lifted
//	PREFIX dfail:{H}    sorted set of a device token's failure times (H of its DeviceID)
//	PREFIX dlock:{H}    hash: until, count, failures, name (the DeviceID in hex)
//	PREFIX devicekey    the shared device key (hex), set once (SET NX)
type Accounts struct {
	c      *Cluster
	acc    *engine.Accounts
	outbox *outbox[string] // unlocks made while Redis was unreachable
}

// Accounts makes the backend count acc's accounts in Redis and share its
// device key; call it before Run.
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
	p := a.mem().Policy()
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

// Enabled reports whether accounts are counted.
func (a *Accounts) Enabled() bool { return a.acc.Enabled() }

// FailAccount implements engine.Backend: see Accounts.fail; the memory's
// while Redis is unreachable or accounts are off.
func (c *Cluster) FailAccount(ctx context.Context, user string, dev decide.Device, now time.Time) (decide.AccountResult, engine.Change) {
	if a := c.accounts.Load(); a != nil && c.Up() && a.Enabled() {
		return a.fail(ctx, user, dev, now)
	}
	return c.mem.FailAccount(ctx, user, dev, now)
}

// SucceedAccount implements engine.Backend: see Accounts.succeed.
func (c *Cluster) SucceedAccount(ctx context.Context, user string, dev decide.Device, now time.Time) {
	c.mem.SucceedAccount(ctx, user, dev, now)
	if a := c.accounts.Load(); a != nil && c.Up() && a.Enabled() {
		a.succeed(ctx, dev)
	}
}

// Unlock implements engine.Backend: see Accounts.unlock.
func (c *Cluster) Unlock(ctx context.Context, user string, now time.Time) (decide.Lock, bool, engine.Change) {
	l, ok, ch := c.mem.Unlock(ctx, user, now)
	if a := c.accounts.Load(); a != nil && a.Enabled() {
		ok = a.unlock(ctx, user, l, ok, &ch, now)
	}
	return l, ok, ch
}

// fail counts a failure in Redis, against a valid token that is not locked,
// else against the account; a lock it makes is in force here before the
// answer.
func (a *Accounts) fail(ctx context.Context, user string, dev decide.Device, now time.Time) (decide.AccountResult, engine.Change) {
	res := decide.AccountResult{Username: user}
	if dev.Valid {
		id := hex.EncodeToString(dev.ID[:])
		r, err := a.count(ctx, "d", id, false, now)
		if err != nil {
			return a.fallback(ctx, err, user, dev, now)
		}
		if r[1] == 0 { // the token is not locked: it takes the failure
			if r, err = a.count(ctx, "d", id, true, now); err != nil {
				return a.fallback(ctx, err, user, dev, now)
			}
			res.Device = decide.DeviceResult{Counted: true, Failures: int(r[0]), Locked: r[1] == 1}
			if r[1] == 1 && a.c.admit(message{Op: opDLock, Key: id, Until: r[2]}, now) {
				res.Device.Until = time.UnixMilli(r[2]).UTC()
				a.mem().ApplyDevice(dev.ID, res.Device.Until, now)
			} else {
				res.Device.Locked = false
			}
			st, err := a.count(ctx, "a", user, false, now)
			if err != nil {
				return a.fallback(ctx, err, user, dev, now)
			}
			a.status(&res, st)
			return res, engine.AccountChange(res)
		}
		res.Device = decide.DeviceResult{Failures: int(r[0]), Locked: true, Until: time.UnixMilli(r[2]).UTC()}
	}
	r, err := a.count(ctx, "a", user, true, now)
	if err != nil {
		return a.fallback(ctx, err, user, dev, now)
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
		if l, locked, _ := a.mem().Status(user, now); !locked || !l.Until.Equal(res.Until) {
			res.Evicted = a.mem().Apply(res.Lock(), now)
		}
	}
	ch := engine.AccountChange(res)
	if res.Locked {
		ch.Users = append(ch.Users, user)
	}
	return res, ch
}

// mem is this doorman's account memory.
func (a *Accounts) mem() *decide.Accounts { return a.c.mem.Accounts() }

func (a *Accounts) status(res *decide.AccountResult, r []int64) {
	res.Failures, res.Locked, res.Count = int(r[0]), r[1] == 1, int(r[3])
	if res.Locked {
		res.Until = time.UnixMilli(r[2]).UTC()
	}
}

func (a *Accounts) fallback(ctx context.Context, err error, user string, dev decide.Device, now time.Time) (decide.AccountResult, engine.Change) {
	a.c.lost(fmt.Errorf("account script: %w", err))
	return a.c.mem.FailAccount(ctx, user, dev, now)
}

// succeed forgets the failures of the device token dev in Redis (and tells
// the peers); the new token is signed with the shared key.
func (a *Accounts) succeed(ctx context.Context, dev decide.Device) {
	if !dev.Valid {
		return
	}
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

// unlock forgets user in Redis too, leaving a tombstone, once memory has
// (l, found: what it forgot). While Redis is unreachable the unlock is
// queued and replayed before the next resync loads locks, and ch says it is
// not shared yet. It reports whether the account was tracked here or in
// Redis.
func (a *Accounts) unlock(ctx context.Context, user string, l decide.Lock, found bool, ch *engine.Change, now time.Time) bool {
	c := a.c
	if c.Up() {
		held, err := unlockScript.Run(ctx, c.rdb, a.akeys("a", user), now.UnixMilli(), -1, l.Until.UnixMilli(),
			c.keys.channel(), user, c.id).Int64()
		if err == nil {
			return found || held == 1 // locked in Redis, not (or no longer) here
		}
		c.lost(fmt.Errorf("unlock: %w", err))
	}
	if found {
		a.outbox.put(user, pendingUnban{until: l.Until, at: now})
		c.notShared(ch)
	}
	c.dirty.Store(true)
	return found
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
