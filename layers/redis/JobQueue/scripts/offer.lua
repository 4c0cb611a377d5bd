-- offer — KEYS: stream, delayed, job hash; ARGV: group, id, payload, enqueuedAt, delayMs, capacity, carried.
-- If the hash exists the queue holds the id: nothing changes ("held"). Else, if ready + delayed (XLEN −
-- pending + ZCARD) is at capacity: "full". Else the hash is created and the job either XADDed (ready) or
-- ZADDed to the delayed set at Redis time + delay: "added". One script so that the capacity check and the
-- add cannot interleave with another producer's. `carried` (what the job carries from its offer, JSON text) is
-- stored only when not empty. Runs after the prelude.

if redis.call('EXISTS', KEYS[3]) == 1 then return 'held' end
local waiting = redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], ARGV[1])[1] + redis.call('ZCARD', KEYS[2])
if waiting >= tonumber(ARGV[6]) then return 'full' end
local delay = tonumber(ARGV[5])
if delay > 0 then
  redis.call('HSET', KEYS[3], 'payload', ARGV[3], 'enqueuedAt', ARGV[4], 'attempts', 0, 'state', 'delayed')
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[3], 'carried', ARGV[7]) end
  redis.call('ZADD', KEYS[2], nowMillis() + delay, ARGV[2])
else
  local entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[2])
  redis.call('HSET', KEYS[3], 'payload', ARGV[3], 'enqueuedAt', ARGV[4], 'attempts', 0, 'state', 'ready', 'entry', entry)
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[3], 'carried', ARGV[7]) end
end
return 'added'
