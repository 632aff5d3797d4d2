-- mark_sent.lua notes that an attempt of a call is about to reach the API.
-- The marker names the attempt, so that the same attempt retrying after a
-- lost reply finds its own marker (and the answer it had) instead of
-- counting itself as a re-send.
--
-- KEYS[1] the call's sent marker, KEYS[2] the re-sent counter.
-- ARGV[1] the attempt's token, ARGV[2] marker TTL ms.
-- Returns 1 for a first send, 0 for a re-send after an attempt whose
-- outcome is unknown.
local v = redis.call('GET', KEYS[1])
if v then
  local tok, first = string.match(v, '^(.-) (%d)$')
  if tok == ARGV[1] then return tonumber(first) end
end
local first = 1
if v then
  first = 0
  redis.call('INCR', KEYS[2])
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. first, 'PX', ARGV[2])
return first
