package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
	c   *Cluster
	acc *engine.Accounts
}

// Accounts returns the cluster's account service over acc; call it before Run.
func (c *Cluster) Accounts(acc *engine.Accounts) *Accounts {
	a := &Accounts{c: c, acc: acc}
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

// accountScript counts one failure of an account or a device token, or only
// reads its state (add 0), and locks it at the threshold, escalating as
// decide's lockTable does: a failure during a lock is counted but does not
// extend it; the failures before a lock that has ended no longer count; the
// lock count is forgotten max lock time after the lock ended.
//
// KEYS: fail, lock
// ARGV: now, window, max, member, add (0/1), locktime, factor, maxlock,
// channel, op, name, origin
// Returns {failures, locked (0/1), until, count, newlock (0/1)}.
var accountScript = redis.NewScript(`
local function int(x) return string.format('%d', x) end
local now, window, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local locktime, factor, maxlock = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local lk = redis.call('HMGET', KEYS[2], 'until', 'count')
local untilv, count = tonumber(lk[1] or '0'), tonumber(lk[2] or '0')
local low = now - window
if untilv > low and untilv <= now then low = untilv - 1 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(low))
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[1], int(now), ARGV[4])
  local n = redis.call('ZCARD', KEYS[1])
  if n > max then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1) end
  redis.call('PEXPIRE', KEYS[1], int(window))
end
local n = redis.call('ZCARD', KEYS[1])
if untilv > now then return {n, 1, untilv, count, 0} end
if ARGV[5] ~= '1' or n < max then return {n, 0, 0, count, 0} end
if untilv > 0 and now - untilv > maxlock then count = 0 end
count = count + 1
local d = locktime * factor ^ (count - 1)
if d ~= d or d >= maxlock then d = maxlock end
d = math.floor(d)
if d < 1 then d = 1 end
untilv = now + d
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'until', int(untilv), 'count', count, 'failures', n, 'name', ARGV[11], 'origin', ARGV[12])
redis.call('PEXPIRE', KEYS[2], int(d + maxlock))
redis.call('PUBLISH', ARGV[9], cjson.encode({op = ARGV[10], key = ARGV[11], ['until'] = untilv, count = count,
  failures = n, origin = ARGV[12]}))
return {n, 1, untilv, count, 1}
`)

// akeys are the fail and lock keys of an account ("a") or a device token ("d").
func (a *Accounts) akeys(kind, name string) []string {
	h := sha256.Sum256([]byte(name))
	tag := ":{" + hex.EncodeToString(h[:12]) + "}"
	p := a.c.keys.prefix
	return []string{p + kind + "fail" + tag, p + kind + "lock" + tag}
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
			a.acc.Counted(res, now)
			return res, nil
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
	a.acc.Counted(res, now)
	if !res.Locked {
		return res, nil
	}
	// In force here before the answer: a lock this failure made, or one
	// Redis held that this doorman lacked.
	if l, locked, _ := a.acc.Core().Status(user, now); !locked || !l.Until.Equal(res.Until) {
		res.Evicted = a.acc.Core().Apply(res.Lock(), now)
	}
	if res.NewLock {
		a.acc.Locked(res.Lock(), now, engine.SourceFailures)
	}
	return res, a.acc.Persist([]string{user}, now)
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

// Unlock implements engine.AccountService: forgotten here, then in Redis.
func (a *Accounts) Unlock(ctx context.Context, user string, now time.Time) (decide.Lock, bool, error) {
	l, ok, err := a.acc.Unlock(ctx, user, now)
	if !a.c.Up() || !a.Enabled() {
		return l, ok, err
	}
	keys := a.akeys("a", user)
	msg, _ := jsonMessage(message{Op: opUnlock, Key: user, Origin: a.c.id})
	var held *redis.IntCmd
	_, rerr := a.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		held = p.Exists(ctx, keys[1])
		p.Del(ctx, keys...)
		p.Publish(ctx, a.c.keys.channel(), msg)
		return nil
	})
	if rerr != nil {
		a.c.lost(fmt.Errorf("unlock: %w", rerr))
	} else if !ok && held.Val() > 0 {
		ok = true // locked in Redis, not (or no longer) here
	}
	return l, ok, err
}

// handle applies an account message from a peer; false: not an account op.
func (a *Accounts) handle(m message) bool {
	now := a.c.now()
	switch m.Op {
	case opLock:
		l := decide.Lock{Username: m.Key, Until: time.UnixMilli(m.Until).UTC(), Count: m.Count, Failures: m.Failures}
		a.learn(l, now)
	case opUnlock:
		if l, ok := a.acc.Core().Unlock(m.Key, now); ok {
			a.acc.Unlocked(l, now, engine.SourceCluster)
		}
	case opDLock:
		if id, ok := deviceID(m.Key); ok {
			a.acc.Core().ApplyDevice(id, time.UnixMilli(m.Until).UTC(), now)
		}
	case opDReset:
		// Only the doorman that saw the success holds the token's state in
		// memory long; the others forget it when its lock ends.
	default:
		return false
	}
	return true
}

// learn applies a lock made elsewhere, unless this doorman holds it already.
func (a *Accounts) learn(l decide.Lock, now time.Time) {
	if cur, locked, _ := a.acc.Core().Status(l.Username, now); locked && !cur.Until.Before(l.Until) {
		return
	}
	a.acc.Core().Apply(l, now)
	a.acc.Locked(l, now, engine.SourceCluster)
	a.acc.Persist([]string{l.Username}, now) // an error is logged and counted
}

func deviceID(s string) (decide.DeviceID, bool) {
	var id decide.DeviceID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// reconcile loads every lock Redis holds, and agrees on the device key: the
// first doorman to reach Redis sets it, the others adopt it.
func (a *Accounts) reconcile(ctx context.Context, now time.Time) error {
	if !a.Enabled() {
		return nil
	}
	if err := a.shareKey(ctx); err != nil {
		return err
	}
	p := globEscape(a.c.keys.prefix)
	err := a.c.scanHashes(ctx, p+"alock:{*", func(_ string, h banHash) {
		until, _ := strconv.ParseInt(h.get("until"), 10, 64)
		count, _ := strconv.Atoi(h.get("count"))
		failures, _ := strconv.Atoi(h.get("failures"))
		if name := h.get("name"); name != "" && until > now.UnixMilli() && a.c.admit(message{Op: opLock, Key: name, Until: until}, now) {
			a.learn(decide.Lock{Username: name, Until: time.UnixMilli(until).UTC(), Count: count, Failures: failures}, now)
		}
	})
	if err != nil {
		return fmt.Errorf("loading account locks: %w", err)
	}
	err = a.c.scanHashes(ctx, p+"dlock:{*", func(_ string, h banHash) {
		until, _ := strconv.ParseInt(h.get("until"), 10, 64)
		if id, ok := deviceID(h.get("name")); ok && until > now.UnixMilli() && a.c.admit(message{Op: opDLock, Key: h.get("name"), Until: until}, now) {
			a.acc.Core().ApplyDevice(id, time.UnixMilli(until).UTC(), now)
		}
	})
	if err != nil {
		return fmt.Errorf("loading device locks: %w", err)
	}
	return nil
}

// shareKey makes every doorman sign tokens with one key: Redis keeps the
// first one offered; a doorman whose key differs adopts it, unless its key
// comes from DOORMAN_DEVICE_KEY (then the operator gave them all one, or
// must: a warning says so).
func (a *Accounts) shareKey(ctx context.Context) error {
	raw, fromConfig := a.acc.Key()
	if raw == nil {
		return nil
	}
	k := a.c.keys.prefix + "devicekey"
	if err := a.c.rdb.SetNX(ctx, k, hex.EncodeToString(raw), 0).Err(); err != nil {
		return fmt.Errorf("device key: %w", err)
	}
	v, err := a.c.rdb.Get(ctx, k).Result()
	if err != nil {
		return fmt.Errorf("device key: %w", err)
	}
	shared, err := hex.DecodeString(v)
	if err != nil || len(shared) < decide.DeviceKeyMin {
		return errors.New("device key in Redis is malformed")
	}
	if fromConfig {
		if hex.EncodeToString(raw) != v {
			a.c.log.Warn("DOORMAN_DEVICE_KEY differs from the key other doormen use: tokens they issue are not honoured here")
		}
		return nil
	}
	return a.acc.UseKey(shared)
}
