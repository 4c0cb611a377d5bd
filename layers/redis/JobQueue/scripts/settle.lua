-- settle — KEYS: stream, delayed, dead, job hash; ARGV: group, consumer, entry, attempts, action, delayMs,
-- reason, at, maxAttempts, maxDead, id, jobPrefix.
-- Refuses ("lost") unless the job is still leased by this lease: same consumer, entry and attempts. Then:
-- - renew: XCLAIM to the same consumer with JUSTID, which resets the entry's idle time (the lease's age)
--   without counting a delivery;
-- - release (the lease's Scope closed unsettled) and nack without delay: XACK + XDEL + a new XADD at the back
--   of the stream, so the job is ready at once (not merely claimable later) and `depth` says so; the attempt
--   already counted stays counted;
-- - nack with delay: XACK + XDEL + ZADD to the delayed set;
-- - nack on the maxAttempts-th delivery, and deadLetter: to the dead letters.
-- Runs after the prelude.

local stream, delayed, dead, job = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, entry, attempts, action = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local state = redis.call('HMGET', job, 'state', 'entry', 'attempts', 'consumer')
if state[1] ~= 'leased' or state[2] ~= entry or state[3] ~= attempts or state[4] ~= consumer then return { 'lost' } end
if action == 'renew' then
  redis.call('XCLAIM', stream, group, consumer, 0, entry, 'JUSTID')
  return { 'renewed' }
end
if action == 'nack' and tonumber(attempts) >= tonumber(ARGV[9]) then action = 'dead' end
if action == 'dead' then
  return { 'dead', kill(stream, group, dead, ARGV[12], ARGV[11], entry, ARGV[7], ARGV[8], ARGV[10]) }
end
redis.call('XACK', stream, group, entry)
redis.call('XDEL', stream, entry)
redis.call('HDEL', job, 'consumer')
local delay = tonumber(ARGV[6])
if action == 'nack' and delay > 0 then
  redis.call('HDEL', job, 'entry')
  redis.call('HSET', job, 'state', 'delayed')
  redis.call('ZADD', delayed, nowMillis() + delay, ARGV[11])
  return { 'delayed' }
end
redis.call('HSET', job, 'state', 'ready', 'entry', redis.call('XADD', stream, '*', 'id', ARGV[11]))
return { 'ready' }
