-- promote — KEYS: stream, delayed; ARGV: jobPrefix, batch.
-- Moves up to `batch` due members of the delayed set (score ≤ Redis time) to the stream: ZREM + XADD + the
-- hash's new state and entry, in one step so a job is never both or neither. Returns how many moved and the
-- ms until the next one is due (−1 when none is delayed), which paces the promoter. Runs after the prelude.

local now = nowMillis()
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  local job = ARGV[1] .. id
  if redis.call('HGET', job, 'state') == 'delayed' then
    redis.call('HSET', job, 'state', 'ready', 'entry', redis.call('XADD', KEYS[1], '*', 'id', id))
  end
end
local next = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if next[2] then return { #due, tostring(tonumber(next[2]) - now) } end
return { #due, '-1' }
