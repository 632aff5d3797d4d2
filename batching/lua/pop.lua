-- pop.lua takes the next chunk from a lane if the rules allow it.
--
-- KEYS[1] lanes set, KEYS[2] in-flight hash, KEYS[3] in-flight times,
-- KEYS[4] the scope's outstanding calls.
-- ARGV[1] prefix, ARGV[2] lane id, ARGV[3] cap, ARGV[4] batch wait ms,
-- ARGV[5] "1" to allow a partial chunk, ARGV[6] window (most outstanding
-- calls), ARGV[7] lease ms, ARGV[8] call id, ARGV[9] zone, ARGV[10] kind,
-- ARGV[11] soft "0"|"1", ARGV[12] the dispatcher's id, ARGV[13] "1" to pop a
-- full chunk before its oldest item has waited, ARGV[14] how long (ms) a
-- popped purge-everything takes the later ones of its lane into it (0:
-- none does), ARGV[15] the lane's priority (high, bulk or empty).
-- Returns {status, value, server ms}: status 1 popped (value: the call
-- payload), 0 window full, -1 lane empty, -2 partial chunk not ready (value:
-- ms when it will be; also a full chunk unless ARGV[13] is "1"), -3 partial
-- chunk ready (value: its size) but not allowed.
-- The client retries a script whose reply a dropped connection lost; the
-- retry must return the chunk the first run popped, not pop another one
-- under the same call id (which would overwrite, and lose, the first).
local prev = redis.call('HGET', KEYS[2], ARGV[8])
if prev then return {1, prev, now} end
local P, lane, cap, wait = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', exact(now - tonumber(ARGV[7])))
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[6]) then return {0, '', now} end
local lk, _, gk = laneKeys(P, lane)
local n = redis.call('LLEN', lk)
if n == 0 then
  forgetLane(P, lane, KEYS[1])
  return {-1, '', now}
end
local oldest = oldestAt(gk)
if n < cap or ARGV[13] ~= '1' then
  local readyAt = oldest + wait
  if readyAt > now then
    redis.call('ZADD', P .. 'ready', 'XX', exact(readyAt), lane)
    return {-2, exact(readyAt), now}
  end
  if n < cap and ARGV[5] ~= '1' then return {-3, tostring(n), now} end
end
local items = redis.call('LPOP', lk, cap)
local sources = take(P, lane, items)
if n <= cap then forgetLane(P, lane, KEYS[1]) end
local rec = cjson.encode({id = ARGV[8], zone = ARGV[9], kind = ARGV[10], soft = ARGV[11] == '1',
  items = items, sources = sources, oldest = oldest, owner = ARGV[12], priority = ARGV[15]})
redis.call('HSET', KEYS[2], ARGV[8], rec)
redis.call('ZADD', KEYS[3], exact(now), ARGV[8])
redis.call('ZADD', KEYS[4], exact(now), ARGV[8])
if ARGV[10] == 'everything' and tonumber(ARGV[14]) > 0 then
  redis.call('SET', P .. 'everything-sent:' .. lane, ARGV[8], 'PX', ARGV[14])
end
-- a dispatcher that is gone (a restarted worker) leaves no set behind
redis.call('PEXPIRE', KEYS[4], ARGV[7])
return {1, rec, now}
