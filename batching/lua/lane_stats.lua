-- lane_stats.lua reports each lane's depth and when its oldest item was
-- admitted (ms; 0 when empty).
--
-- KEYS[1] lanes set (for routing). ARGV[1] prefix, ARGV[2…] lane ids.
-- Returns {depth, oldest, depth, oldest, …}.
local out = {}
for i = 2, #ARGV do
  local lk, _, gk = laneKeys(ARGV[1], ARGV[i])
  local n = redis.call('LLEN', lk)
  out[#out + 1] = n
  out[#out + 1] = 0
  if n > 0 then out[#out] = oldestAt(gk) end
end
return out
