package cluster

import "github.com/redis/go-redis/v9"

// The Lua scripts below are the only writers of doorman's Redis keys. Each
// runs atomically on the server, so two doormen counting the same unit at once
// never miss or double a ban, and each publishes its change on the channel in
// the same step, so a change and its message cannot be separated by a crash.
//
// Keys of one ban key K share the hash tag {K}, so each script touches a
// single slot and the layout works on Redis Cluster too:
//
//	PREFIX ban:{K}    hash: until, at (ms since the epoch; absent when pushed by reconcile),
//	                  count, failures, manual (0/1), note, ip, origin; PX = until-now
//	PREFIX fail:{K}   sorted set of failure times (ms); PX = find time
//	PREFIX count:{K}  the ban count, for escalation; PX = ban length + max ban time
//	PREFIX unban:{K}  tombstone: the until of the last ban lifted, PX = until-now
//	PREFIX events     the pub/sub channel
//
// Times come from the caller (ms since the epoch), so doormen need clocks in
// step (NTP); TTLs are relative, so Redis's own clock does not matter.

// duration is the escalation rule of decide.Core: BanTime × BanFactor^(count-1),
// capped at MaxBanTime, in ms.
const luaDuration = `
local function duration(count, bantime, factor, maxban)
  local d = bantime * factor ^ (count - 1)
  if d ~= d or d >= maxban then d = maxban end
  d = math.floor(d)
  if d < 1 then d = 1 end
  return d
end
local function int(x) return string.format('%d', x) end
`

// failScript records one failure.
//
// KEYS: fail, ban, count, unban
// ARGV: now, findtime, maxfailures, member, hold (1: count but never ban),
// bantime, factor, maxbantime, channel, key, ip, origin
// Returns {failures, banned (0/1), until, count}.
var failScript = redis.NewScript(luaDuration + `
local now, window, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now - window))
redis.call('ZADD', KEYS[1], int(now), ARGV[4])
local n = redis.call('ZCARD', KEYS[1])
if n > max then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - max - 1)
  n = max
end
redis.call('PEXPIRE', KEYS[1], int(window))
if n < max or ARGV[5] == '1' then return {n, 0, 0, 0} end
local cur = tonumber(redis.call('HGET', KEYS[2], 'until') or '0')
if cur > now then return {n, 0, cur, 0} end
local maxban = tonumber(ARGV[8])
local count = redis.call('INCR', KEYS[3])
local d = duration(count, tonumber(ARGV[6]), tonumber(ARGV[7]), maxban)
local untilv = now + d
redis.call('DEL', KEYS[2], KEYS[4], KEYS[1])
redis.call('HSET', KEYS[2], 'until', int(untilv), 'at', int(now), 'count', count, 'failures', n,
  'manual', 0, 'note', '', 'ip', ARGV[11], 'origin', ARGV[12])
redis.call('PEXPIRE', KEYS[2], int(d))
redis.call('PEXPIRE', KEYS[3], int(d + maxban))
redis.call('PUBLISH', ARGV[9], cjson.encode({op = 'ban', key = ARGV[10], ip = ARGV[11], ['until'] = untilv,
  count = count, failures = n, manual = false, note = '', origin = ARGV[12]}))
return {n, 1, untilv, count}
`)

// banScript makes a manual ban.
//
// KEYS: ban, count, unban
// ARGV: now, duration (0: escalate), bantime, factor, maxbantime, note,
// channel, key, ip, origin
// Returns {until, count}.
var banScript = redis.NewScript(luaDuration + `
local now, maxban = tonumber(ARGV[1]), tonumber(ARGV[5])
local count = redis.call('INCR', KEYS[2])
local d = tonumber(ARGV[2])
if d <= 0 then d = duration(count, tonumber(ARGV[3]), tonumber(ARGV[4]), maxban) end
local untilv = now + d
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('HSET', KEYS[1], 'until', int(untilv), 'at', int(now), 'count', count, 'failures', 0,
  'manual', 1, 'note', ARGV[6], 'ip', ARGV[9], 'origin', ARGV[10])
redis.call('PEXPIRE', KEYS[1], int(d))
redis.call('PEXPIRE', KEYS[2], int(d + maxban))
redis.call('PUBLISH', ARGV[7], cjson.encode({op = 'ban', key = ARGV[8], ip = ARGV[9], ['until'] = untilv,
  count = count, failures = 0, manual = true, note = ARGV[6], origin = ARGV[10]}))
return {untilv, count}
`)

// pushScript offers a ban this instance holds and Redis may lack (made while
// Redis was unreachable, or lost by a Redis restart). The longer ban wins; a
// tombstone at least as long means the ban was lifted meanwhile.
//
// KEYS: ban, count, unban
// ARGV: now, until, count, failures, manual (0/1), note, maxbantime, channel,
// key, ip, origin
// Returns 1 (stored), 0 (Redis holds an equal or longer ban, or it expired)
// or -1 (lifted meanwhile: drop it).
var pushScript = redis.NewScript(luaDuration + `
local now, untilv, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if untilv <= now then return 0 end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= untilv then return -1 end
if tonumber(redis.call('HGET', KEYS[1], 'until') or '0') >= untilv then return 0 end
local ttl = untilv - now
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'until', int(untilv), 'count', count, 'failures', ARGV[4],
  'manual', ARGV[5], 'note', ARGV[6], 'ip', ARGV[10], 'origin', ARGV[11])
redis.call('PEXPIRE', KEYS[1], int(ttl))
if tonumber(redis.call('GET', KEYS[2]) or '0') < count then
  redis.call('SET', KEYS[2], count, 'PX', int(ttl + tonumber(ARGV[7])))
elseif redis.call('PTTL', KEYS[2]) < ttl + tonumber(ARGV[7]) then
  redis.call('PEXPIRE', KEYS[2], int(ttl + tonumber(ARGV[7])))
end
redis.call('PUBLISH', ARGV[8], cjson.encode({op = 'ban', key = ARGV[9], ip = ARGV[10], ['until'] = untilv,
  count = count, failures = tonumber(ARGV[4]), manual = ARGV[5] == '1', note = ARGV[6], origin = ARGV[11]}))
return 1
`)

// unbanScript lifts the ban under one key, forgets the unit's failures and
// leaves a tombstone, so an instance that still holds the ban (it missed the
// message) drops it at its next sync instead of pushing it back.
//
// KEYS: ban, count, unban, fail
// ARGV: now, before (-1: lift whatever is there; else only a ban made at or
// before this time is lifted: an unban queued during an outage must not lift
// a newer ban), until of the ban this instance lifted locally (0: none),
// channel, key, ip, origin
// Returns the lifted ban's hash as a flat list, or an empty list.
var unbanScript = redis.NewScript(`
local now, before, localUntil = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('DEL', KEYS[4])
local h = redis.call('HGETALL', KEYS[1])
local tomb = localUntil
if #h > 0 then
  local f = {}
  for i = 1, #h, 2 do f[h[i]] = h[i + 1] end
  if before >= 0 then
    -- A queued unban lifts the ban it saw, not a newer one. A pushed ban has
    -- no 'at' (its making time is not known): it is the same ban when it ends
    -- no later than the one lifted.
    if f['at'] then
      if tonumber(f['at']) > before then return {} end
    elseif tonumber(f['until']) > localUntil then
      return {}
    end
  end
  if tonumber(f['until']) > tomb then tomb = tonumber(f['until']) end
  redis.call('DEL', KEYS[1], KEYS[2])
elseif localUntil == 0 then
  return {}
end
if tomb > now then
  local old = tonumber(redis.call('GET', KEYS[3]) or '0')
  if tomb > old then redis.call('SET', KEYS[3], string.format('%d', tomb), 'PX', string.format('%d', tomb - now)) end
end
redis.call('PUBLISH', ARGV[4], cjson.encode({op = 'unban', key = ARGV[5], ip = ARGV[6], origin = ARGV[7]}))
return h
`)

var scripts = []*redis.Script{failScript, banScript, pushScript, unbanScript}
