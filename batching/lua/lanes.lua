-- lanes.lua holds what the scripts that add to or take from lanes share
-- (it needs clock.lua before it). A lane is four keys, and a list for each
-- item asked for again while it waits:
--
--   - lane:<id>, a list of the waiting items in admission order;
--   - has:<id>, a set of their SHA-1 digests (20 bytes), so that an item
--     waiting twice is stored once;
--   - grp:<id>, a hash from admission number to "ms count rid…" (when the
--     admission's count items were admitted, and for which requests), with
--     head (the admission of the list's first item) and taken (how many of
--     head's items already left) and the counter n;
--   - dup:<id>, a set of the digests of the items asked for again while
--     they waited, and for each again:<id>:<digest>, a list of the
--     requests that asked again (appending is O(1), however hot the item).
--
-- An item costs its list entry and its digest; the rest is shared by its
-- admission. (A sorted set scored by admission costs about 100 bytes an
-- item more than the item; this layout about 80.)
local function laneKeys(P, lane)
  return P .. 'lane:' .. lane, P .. 'has:' .. lane, P .. 'grp:' .. lane, P .. 'dup:' .. lane
end
local function againKey(P, lane, d) return P .. 'again:' .. lane .. ':' .. d end
local function hexByte(x) return string.char(tonumber(x, 16)) end
local function digest(item) return (string.gsub(redis.sha1hex(item), '..', hexByte)) end
-- The lanes set lists the lanes with items waiting; the ready index (a
-- sorted set, P .. 'ready') scores each by when the dispatcher should look
-- at it next (server ms), so that a pass touches only lanes that may send.
-- A lane given items is looked at now; pop.lua pushes a lane whose chunk
-- is not ready to when it will be, and the dispatcher holds a partial chunk
-- while the limits are busy (hold.lua).
local function markLane(P, lane, lanesKey)
  redis.call('SADD', lanesKey, lane)
  redis.call('ZADD', P .. 'ready', 'LT', now, lane)
end
local function forgetLane(P, lane, lanesKey)
  redis.call('DEL', laneKeys(P, lane))
  redis.call('SREM', lanesKey, lane)
  redis.call('ZREM', P .. 'ready', lane)
end
-- admitInto adds items[from..to] to a lane for the requests in src
-- (space-separated) and returns how many were not waiting already.
local function admitInto(P, lane, src, items, from, to)
  local lk, hk, gk, dk = laneKeys(P, lane)
  local fresh = {}
  for j = from, to do
    local d = digest(items[j])
    if redis.call('SADD', hk, d) == 1 then
      fresh[#fresh + 1] = items[j]
    else
      redis.call('SADD', dk, d)
      redis.call('RPUSH', againKey(P, lane, d), src)
    end
  end
  if #fresh == 0 then return 0 end
  for j = 1, #fresh, 1000 do
    redis.call('RPUSH', lk, unpack(fresh, j, math.min(j + 999, #fresh)))
  end
  local seq = redis.call('HINCRBY', gk, 'n', 1)
  redis.call('HSETNX', gk, 'head', seq)
  redis.call('HSET', gk, seq, exact(now) .. ' ' .. #fresh .. ' ' .. src)
  return #fresh
end
-- admission reads an admission's record: ms, count, requests.
local function admission(gk, seq)
  local ms, count, src = string.match(redis.call('HGET', gk, exact(seq)) or '', '^(%d+) (%d+) ?(.-)%s*$')
  -- a missing record (never expected) ends the walk instead of looping
  if not ms then return now, math.huge, '' end
  return tonumber(ms), tonumber(count), src
end
-- oldestAt is when the lane's first item was admitted (ms).
local function oldestAt(gk)
  local ms = admission(gk, tonumber(redis.call('HGET', gk, 'head')) or 0)
  return ms
end
-- take accounts for items that left the head of a lane (popped or
-- superseded): it returns their requests and moves the head past them.
local function take(P, lane, items)
  local _, hk, gk, dk = laneKeys(P, lane)
  local seq = tonumber(redis.call('HGET', gk, 'head')) or 1
  local taken = tonumber(redis.call('HGET', gk, 'taken')) or 0
  local _, count, src = admission(gk, seq)
  local dups = redis.call('EXISTS', dk) == 1
  local sources = {}
  for j, item in ipairs(items) do
    while taken >= count do
      redis.call('HDEL', gk, exact(seq))
      seq, taken = seq + 1, 0
      _, count, src = admission(gk, seq)
    end
    taken = taken + 1
    local s, d = src, digest(item)
    if dups and redis.call('SREM', dk, d) == 1 then
      local ak = againKey(P, lane, d)
      s = s .. ' ' .. table.concat(redis.call('LRANGE', ak, 0, -1), ' ')
      redis.call('DEL', ak)
    end
    sources[j] = s
    redis.call('SREM', hk, d)
  end
  if taken >= count then
    redis.call('HDEL', gk, exact(seq))
    seq, taken = seq + 1, 0
  end
  redis.call('HSET', gk, 'head', exact(seq), 'taken', taken)
  return sources
end
