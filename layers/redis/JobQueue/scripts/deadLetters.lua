-- deadLetters — KEYS: dead; ARGV: jobPrefix. The dead list with each job's fields, read in one step.

local letters = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HMGET', ARGV[1] .. id, 'payload', 'attempts', 'reason', 'at')
  table.insert(letters, { id, fields[1], fields[2], fields[3], fields[4] })
end
return letters
