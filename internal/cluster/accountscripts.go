package cluster

import "github.com/redis/go-redis/v9"

// The account scripts take the keys of one account or device token, from
// Accounts.akeys, which share one hash tag (a hash of the name):
//
//	KEYS[1] PREFIX afail:{H}    sorted set of failure times (ms); PX = find time
//	KEYS[2] PREFIX alock:{H}    hash: until, at (absent when pushed), count, failures, name,
//	                            origin; PX = lock + max lock time
//	KEYS[3] PREFIX aunlock:{H}  tombstone: the until of the last lock lifted, PX = until-now
//
// and the same with d for a device token (H of its DeviceID). The lock
// rule is luaRules' duration, as for bans.
const luaAccounts = luaRules + `
local FAIL, LOCK, UNLOCK = KEYS[1], KEYS[2], KEYS[3]
`

// accountScript counts one failure of an account or a device token, or only
// reads its state (add 0), and locks it at the threshold, escalating as
// decide's lockTable does: a failure during a lock is counted but does not
// extend it; the failures before a lock that has ended no longer count; the
// lock count is forgotten max lock time after the lock ended.
//
// ARGV: now, window, max, member, add (0/1), locktime, factor, maxlock,
// channel, op, name, origin
// Returns {failures, locked (0/1), until, count, newlock (0/1)}.
var accountScript = redis.NewScript(luaAccounts + `
local now, window, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local locktime, factor, maxlock = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local lk = redis.call('HMGET', LOCK, 'until', 'count')
local untilv, count = tonumber(lk[1] or '0'), tonumber(lk[2] or '0')
local low = now - window
if untilv > low and untilv <= now then low = untilv - 1 end
redis.call('ZREMRANGEBYSCORE', FAIL, '-inf', int(low))
if ARGV[5] == '1' then
  redis.call('ZADD', FAIL, int(now), ARGV[4])
  local n = redis.call('ZCARD', FAIL)
  if n > max then redis.call('ZREMRANGEBYRANK', FAIL, 0, n - max - 1) end
  redis.call('PEXPIRE', FAIL, int(window))
end
local n = redis.call('ZCARD', FAIL)
if untilv > now then return {n, 1, untilv, count, 0} end
if ARGV[5] ~= '1' or n < max then return {n, 0, 0, count, 0} end
if untilv > 0 and now - untilv > maxlock then count = 0 end
count = count + 1
local d = duration(count, locktime, factor, maxlock)
untilv = now + d
redis.call('DEL', LOCK, UNLOCK)
redis.call('HSET', LOCK, 'until', int(untilv), 'at', int(now), 'count', count, 'failures', n, 'name', ARGV[11],
  'origin', ARGV[12])
redis.call('PEXPIRE', LOCK, int(d + maxlock))
redis.call('PUBLISH', ARGV[9], cjson.encode({op = ARGV[10], key = ARGV[11], ['until'] = untilv, count = count,
  failures = n, origin = ARGV[12]}))
return {n, 1, untilv, count, 1}
`)

// pushLockScript offers an account lock this doorman holds and Redis may
// lack (made while Redis was unreachable, or lost by a Redis restart). The
// longer lock wins; a tombstone at least as long means the account was
// unlocked meanwhile.
//
// ARGV: now, until, count, failures, maxlock, channel, name, origin
// Returns 1 (stored), 0 (Redis holds an equal or longer lock, or it ended)
// or -1 (unlocked meanwhile: drop it).
var pushLockScript = redis.NewScript(luaAccounts + `
local now, untilv, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if untilv <= now then return 0 end
if tonumber(redis.call('GET', UNLOCK) or '0') >= untilv then return -1 end
local cur = redis.call('HMGET', LOCK, 'until', 'count')
if tonumber(cur[1] or '0') >= untilv then return 0 end
count = math.max(count, tonumber(cur[2] or '0'))
redis.call('DEL', LOCK)
redis.call('HSET', LOCK, 'until', int(untilv), 'count', count, 'failures', ARGV[4], 'name', ARGV[7], 'origin', ARGV[8])
redis.call('PEXPIRE', LOCK, int(untilv - now + tonumber(ARGV[5])))
redis.call('PUBLISH', ARGV[6], cjson.encode({op = 'lock', key = ARGV[7], ['until'] = untilv, count = count,
  failures = tonumber(ARGV[4]), origin = ARGV[8]}))
return 1
`)

// unlockScript forgets an account (its failures, lock and escalation) and
// leaves a tombstone, so a doorman that still holds the lock (it missed the
// message) drops it at its next sync instead of pushing it back.
//
// ARGV: now, before (-1: lift whatever is there; else only a lock made at or
// before this time is lifted: an unlock queued during an outage must not
// lift a newer lock), until of the lock lifted here (0: none), channel,
// name, origin
// Returns 1 when Redis held a lock (in force, or its count remembered), else 0.
var unlockScript = redis.NewScript(luaAccounts + `
local now, before, localUntil = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local f = redis.call('HMGET', LOCK, 'until', 'at')
local untilv, at = tonumber(f[1] or '0'), tonumber(f[2] or '-1')
if before >= 0 and untilv > 0 then
  -- A pushed lock has no 'at': it is the one lifted when it ends no later.
  if at >= 0 then
    if at > before then return 0 end
  elseif untilv > localUntil then
    return 0
  end
end
redis.call('DEL', FAIL, LOCK)
local tomb = math.max(untilv, localUntil)
if tomb > now then
  local old = tonumber(redis.call('GET', UNLOCK) or '0')
  if tomb > old then redis.call('SET', UNLOCK, int(tomb), 'PX', int(tomb - now)) end
end
redis.call('PUBLISH', ARGV[4], cjson.encode({op = 'unlock', key = ARGV[5], origin = ARGV[6]}))
if untilv > 0 then return 1 end
return 0
`)
