-- retire — KEYS: stream; ARGV: group, consumer. On close, the consumer leaves the group, but only if it holds
-- no pending entry: DELCONSUMER drops the consumer's PEL, whose jobs would then never be delivered again.

if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
