-- requeue — KEYS: stream, dead, job hash; ARGV: id.
-- A dead job leaves the dead list (LREM) and is XADDed as ready with its attempts reset to 0, in one step.

if redis.call('HGET', KEYS[3], 'state') ~= 'dead' then return 0 end
redis.call('LREM', KEYS[2], 1, ARGV[1])
redis.call('HSET', KEYS[3], 'state', 'ready', 'attempts', 0, 'entry', redis.call('XADD', KEYS[1], '*', 'id', ARGV[1]))
redis.call('HDEL', KEYS[3], 'reason', 'at')
return 1
