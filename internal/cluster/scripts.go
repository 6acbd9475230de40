package cluster

import "github.com/redis/go-redis/v9"

// The Lua scripts below are the only writers of doorman's Redis keys. Each
// runs atomically on the server, so two doormen counting the same unit at once
// never miss or double a ban, and each publishes its change on the channel in
// the same step, so a change and its message cannot be separated by a crash.
//
// Every script takes the same KEYS, from keyspace.of: the keys of one ban key
// K, which share the hash tag {K}, so each script touches a single slot and
// the layout works on Redis Cluster too:
//
//	KEYS[1] PREFIX ban:{K}    hash: until, at (ms since the epoch; absent when pushed by reconcile),
//	                          count, failures, manual (0 failures, 1 manual, 2 range), note, ip,
//	                          origin; PX = until-now
//	KEYS[2] PREFIX count:{K}  the ban count, for escalation; PX = ban length + max ban time
//	KEYS[3] PREFIX unban:{K}  tombstone: the until of the last ban lifted, PX = until-now
//	KEYS[4] PREFIX fail:{K}   sorted set of failure times (ms); PX = find time
//	        PREFIX events     the pub/sub channel (an ARGV, not a key)
//
// Times come from the caller (ms since the epoch), so doormen need clocks in
// step (NTP); TTLs are relative, so Redis's own clock does not matter.

// luaRules holds what every script shares, the ban scripts and the account
// scripts alike: int, and duration, the escalation rule of
// decide.Policy.Duration (and of decide's lock table) in ms; a shared table
// of cases tests it against the Go rule.
const luaRules = `
local function int(x) return string.format('%d', x) end
local function duration(count, bantime, factor, maxban)
  local d = bantime * factor ^ (count - 1)
  if d ~= d or d >= maxban then d = maxban end
  d = math.floor(d)
  if d < 1 then d = 1 end
  return d
end
`

// luaPrelude is luaRules plus what the ban scripts share: the names of
// their keys, and save, the one writer of a ban hash and its message, so the
// hash and what peers learn always have the same fields.
const luaPrelude = luaRules + `
local BAN, COUNT, UNBAN, FAIL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- save replaces the ban hash with b (fields until, at (optional), count,
-- failures, manual (0, 1, or 2 for a range), note, ip, origin), expiring at b.until, and
-- publishes it on channel under key.
local function save(channel, key, b, now)
  redis.call('DEL', BAN)
  local h = {'until', int(b['until']), 'count', b.count, 'failures', b.failures, 'manual', b.manual,
    'note', b.note, 'ip', b.ip, 'origin', b.origin}
  if b.at then h[#h + 1] = 'at'; h[#h + 1] = int(b.at) end
  redis.call('HSET', BAN, unpack(h))
  redis.call('PEXPIRE', BAN, int(b['until'] - now))
  redis.call('PUBLISH', channel, cjson.encode({op = 'ban', key = key, ip = b.ip, ['until'] = b['until'],
    count = b.count, failures = b.failures, manual = b.manual == 1, range = b.manual == 2, note = b.note,
    origin = b.origin}))
end
`

// durationScript evaluates the escalation rule alone, for the test that
// holds it equal to decide.Policy.Duration.
//
// ARGV: count, bantime, factor, maxbantime. Returns the duration in ms.
var durationScript = redis.NewScript(luaRules + `
return duration(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
`)

// failScript records one failure.
//
// ARGV: now, findtime, maxfailures, member, hold (1: count but never ban),
// bantime, factor, maxbantime, channel, key, ip, origin, jitter (the ban's
// length is multiplied by it: 1 + DOORMAN_BAN_JITTER × a random fraction)
// Returns {failures, banned (0/1), until, count, manual}: banned 1 for a ban
// this failure made; banned 0 with until > 0 when Redis already held one.
var failScript = redis.NewScript(luaPrelude + `
local now, window, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', FAIL, '-inf', int(now - window))
redis.call('ZADD', FAIL, int(now), ARGV[4])
local n = redis.call('ZCARD', FAIL)
if n > max then
  redis.call('ZREMRANGEBYRANK', FAIL, 0, n - max - 1)
  n = max
end
redis.call('PEXPIRE', FAIL, int(window))
if ARGV[5] == '1' then return {n, 0, 0, 0, 0} end
local cur = redis.call('HMGET', BAN, 'until', 'count', 'manual')
if tonumber(cur[1] or '0') > now then return {n, 0, tonumber(cur[1]), tonumber(cur[2] or '1'), tonumber(cur[3] or '0')} end
if n < max then return {n, 0, 0, 0, 0} end
local maxban = tonumber(ARGV[8])
local count = redis.call('INCR', COUNT)
local d = math.floor(duration(count, tonumber(ARGV[6]), tonumber(ARGV[7]), maxban) * tonumber(ARGV[13]))
redis.call('DEL', UNBAN, FAIL)
save(ARGV[9], ARGV[10], {['until'] = now + d, at = now, count = count, failures = n, manual = 0, note = '',
  ip = ARGV[11], origin = ARGV[12]}, now)
redis.call('PEXPIRE', COUNT, int(d + maxban))
return {n, 1, now + d, count, 0}
`)

// banScript makes a manual ban.
//
// ARGV: now, duration (0: escalate), bantime, factor, maxbantime, note,
// channel, key, ip, origin
// Returns {until, count}.
var banScript = redis.NewScript(luaPrelude + `
local now, maxban = tonumber(ARGV[1]), tonumber(ARGV[5])
local count = redis.call('INCR', COUNT)
local d = tonumber(ARGV[2])
if d <= 0 then d = duration(count, tonumber(ARGV[3]), tonumber(ARGV[4]), maxban) end
redis.call('DEL', UNBAN)
save(ARGV[7], ARGV[8], {['until'] = now + d, at = now, count = count, failures = 0, manual = 1, note = ARGV[6],
  ip = ARGV[9], origin = ARGV[10]}, now)
redis.call('PEXPIRE', COUNT, int(d + maxban))
return {now + d, count}
`)

// pushScript offers a ban this instance holds and Redis may lack (made while
// Redis was unreachable, or lost by a Redis restart). The longer ban wins; a
// tombstone at least as long means the ban was lifted meanwhile.
//
// ARGV: now, until, count, failures, manual (0, 1, 2: range), note, maxbantime, channel,
// key, ip, origin
// Returns 1 (stored), 0 (Redis holds an equal or longer ban, or it expired)
// or -1 (lifted meanwhile: drop it).
var pushScript = redis.NewScript(luaPrelude + `
local now, untilv, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if untilv <= now then return 0 end
if tonumber(redis.call('GET', UNBAN) or '0') >= untilv then return -1 end
if tonumber(redis.call('HGET', BAN, 'until') or '0') >= untilv then return 0 end
local ttl = untilv - now
save(ARGV[8], ARGV[9], {['until'] = untilv, count = count, failures = tonumber(ARGV[4]), manual = tonumber(ARGV[5]),
  note = ARGV[6], ip = ARGV[10], origin = ARGV[11]}, now)
if tonumber(redis.call('GET', COUNT) or '0') < count then
  redis.call('SET', COUNT, count, 'PX', int(ttl + tonumber(ARGV[7])))
elseif redis.call('PTTL', COUNT) < ttl + tonumber(ARGV[7]) then
  redis.call('PEXPIRE', COUNT, int(ttl + tonumber(ARGV[7])))
end
return 1
`)

// unbanScript lifts the ban under one key, forgets the unit's failures and
// leaves a tombstone, so an instance that still holds the ban (it missed the
// message) drops it at its next sync instead of pushing it back.
//
// ARGV: now, before (-1: lift whatever is there; else only a ban made at or
// before this time is lifted: an unban queued during an outage must not lift
// a newer ban), until of the ban this instance lifted locally (0: none),
// channel, key, ip, origin
// Returns the lifted ban's hash as a flat list, or an empty list.
var unbanScript = redis.NewScript(luaPrelude + `
local now, before, localUntil = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('DEL', FAIL)
local h = redis.call('HGETALL', BAN)
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
  redis.call('DEL', BAN, COUNT)
elseif localUntil == 0 then
  return {}
end
if tomb > now then
  local old = tonumber(redis.call('GET', UNBAN) or '0')
  if tomb > old then redis.call('SET', UNBAN, int(tomb), 'PX', int(tomb - now)) end
end
redis.call('PUBLISH', ARGV[4], cjson.encode({op = 'unban', key = ARGV[5], ip = ARGV[6], origin = ARGV[7]}))
return h
`)

var scripts = []*redis.Script{failScript, banScript, pushScript, unbanScript}
