-- Shared by the scripts that call its functions (offer, take, settle, promote: scripts.ts puts it before them):
-- Redis time in ms, and the move of a leased job to the dead letters.

local function nowMillis()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
-- A leased job's entry leaves the stream and the PEL; its hash stays, marked dead; the oldest dead letter
-- past maxDead is forgotten altogether. Returns the id dropped, or false.
local function kill(stream, group, dead, jobPrefix, id, entry, reason, at, maxDead)
  local job = jobPrefix .. id
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
  redis.call('HSET', job, 'state', 'dead', 'reason', reason, 'at', at)
  redis.call('HDEL', job, 'entry', 'consumer')
  redis.call('RPUSH', dead, id)
  if redis.call('LLEN', dead) > tonumber(maxDead) then
    local dropped = redis.call('LPOP', dead)
    redis.call('DEL', jobPrefix .. dropped)
    return dropped
  end
  return false
end
