-- depth — KEYS: stream, delayed, dead; ARGV: group. One script so the four counts are of one moment:
-- ready = XLEN − pending, leased = pending (XPENDING summary), delayed = ZCARD, dead = LLEN.

local pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
return { redis.call('XLEN', KEYS[1]) - pending, pending, redis.call('ZCARD', KEYS[2]), redis.call('LLEN', KEYS[3]) }
