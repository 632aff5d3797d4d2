-- stranded.lua lists in-flight records older than ARGV[1] ms.
--
-- KEYS[1] in-flight hash, KEYS[2] in-flight times.
-- Returns {id, payload, id, payload, …}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', exact(now - tonumber(ARGV[1])), 'LIMIT', 0, 100)
local out = {}
for _, id in ipairs(ids) do
  local rec = redis.call('HGET', KEYS[1], id)
  if rec then
    out[#out + 1] = id
    out[#out + 1] = rec
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return out
