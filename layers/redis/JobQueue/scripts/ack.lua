-- ack — KEYS: stream; ARGV: group, consumer, jobPrefix, then id, entry, attempts of each lease to ack.
-- For each lease: refused ("lost") unless the job is still leased by it (same consumer, entry and attempts);
-- else the job is gone: XACK + XDEL of its entry and DEL of its hash, its id free again ("acked"). Acks made
-- while one is on its way to Redis are sent together, so under load one call settles many jobs.

local stream, group, consumer, jobPrefix = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local statuses, entries = {}, {}
for i = 4, #ARGV, 3 do
  local job = jobPrefix .. ARGV[i]
  local state = redis.call('HMGET', job, 'state', 'entry', 'attempts', 'consumer')
  if state[1] == 'leased' and state[2] == ARGV[i + 1] and state[3] == ARGV[i + 2] and state[4] == consumer then
    redis.call('DEL', job)
    table.insert(entries, ARGV[i + 1])
    table.insert(statuses, 'acked')
  else
    table.insert(statuses, 'lost')
  end
end
if #entries > 0 then
  redis.call('XACK', stream, group, unpack(entries))
  redis.call('XDEL', stream, unpack(entries))
end
return statuses
