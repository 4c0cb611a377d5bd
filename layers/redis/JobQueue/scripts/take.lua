-- take — KEYS: stream, dead; ARGV: group, consumer, leaseMs, maxAttempts, jobPrefix, at, maxDead, scan, wanted.
-- Leases up to `wanted` jobs to this consumer (one per taker waiting in this process). First, when `scan` is 1,
-- expired leases (any consumer's entry idle for leaseMs or more), walking the PEL with XAUTOCLAIM (the walk costs
-- Redis time in proportion to the leased jobs, so a process asks for it at most once per `recheck` — a quarter
-- of the lease, at most `takerRecheck` — unless the last walk stopped early): a job already delivered
-- maxAttempts times is dead-lettered instead (its worker keeps dying or hanging), otherwise it is leased to this
-- consumer. Then new entries with XREADGROUP `>`, oldest first. Leasing increments the hash's `attempts` in the
-- same step, so the attempt is exact and a stale lease's token no longer matches. Entries without a matching hash
-- (never written by this queue) are acknowledged and dropped. Returns { dropped dead letters, 1 if the walk
-- stopped before the end of the PEL (else 0), expired leases taken over, of which dead-lettered, then id, entry,
-- attempts, payload, enqueuedAt, carried of each lease }. Runs after the prelude.

local stream, dead = KEYS[1], KEYS[2]
local group, consumer, leaseMs, maxAttempts, jobPrefix = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local wanted = tonumber(ARGV[9])
local dropped = {}
local reply = { dropped, 0, 0, 0 }
local leased, takenOver, expiredDead = 0, 0, 0
local function forget(entry)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end
local function lease(entry, id)
  local job = jobPrefix .. id
  local attempts = redis.call('HINCRBY', job, 'attempts', 1)
  redis.call('HSET', job, 'state', 'leased', 'consumer', consumer)
  local fields = redis.call('HMGET', job, 'payload', 'enqueuedAt', 'carried')
  local n = #reply
  reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4], reply[n + 5] = id, entry, tostring(attempts), fields[1], fields[2]
  reply[n + 6] = fields[3] or ''
  leased = leased + 1
end
if ARGV[8] == '1' then
  local cursor = '0-0'
  repeat
    local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, leaseMs, cursor, 'COUNT', wanted - leased)
    cursor = claimed[1]
    for _, message in ipairs(claimed[2]) do
      local entry, fields = message[1], message[2]
      local id = fields and fields[2]
      local state = id and redis.call('HMGET', jobPrefix .. id, 'state', 'entry', 'attempts')
      if not state or state[1] ~= 'leased' or state[2] ~= entry then
        forget(entry)
      elseif tonumber(state[3]) >= maxAttempts then
        takenOver, expiredDead = takenOver + 1, expiredDead + 1
        local gone = kill(stream, group, dead, jobPrefix, id, entry, 'lease expired on delivery ' .. state[3], ARGV[6], ARGV[7])
        if gone then table.insert(dropped, gone) end
      else
        takenOver = takenOver + 1
        lease(entry, id)
      end
    end
  until cursor == '0-0' or leased >= wanted
  if cursor ~= '0-0' then reply[2] = 1 end
end
while leased < wanted do
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', wanted - leased, 'STREAMS', stream, '>')
  if not read then break end
  for _, message in ipairs(read[1][2]) do
    local entry, fields = message[1], message[2]
    local id = fields and fields[2]
    local state = id and redis.call('HMGET', jobPrefix .. id, 'state', 'entry')
    if state and state[1] == 'ready' and state[2] == entry then lease(entry, id) else forget(entry) end
  end
end
reply[3], reply[4] = takenOver, expiredDead
return reply
