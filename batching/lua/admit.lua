-- admit.lua puts one slice of a chunk of a request's items into their lanes
-- (a request has one chunk unless it was streamed; a chunk is admitted in
-- slices of at most admitSlice items).
--
-- KEYS[1] lanes set. ARGV[1] key prefix, ARGV[2] retention ms, ARGV[3]
-- request id, ARGV[4] enqueued-at ms (kept in the status), ARGV[5] soft
-- "0"|"1", ARGV[6] the slice's item count, ARGV[7] chunk index, ARGV[8]
-- chunk count, ARGV[9] slice index, ARGV[10] "1" if it is the chunk's last
-- slice, ARGV[11] producer, ARGV[12] source, ARGV[13] priority (high,
-- bulk or empty), then groups: zone, kind, n, n items (a zone's everything
-- group first).
-- Returns 1, or 0 if the slice was admitted before (a retried task).
local rid, soft = ARGV[3], ARGV[5]
-- Items are aged by admission, not by the producer's clock: when
-- admission lags behind a burst, items must not arrive already "ready"
-- and leave in partial chunks.
local reqk = P .. 'req:' .. rid
-- mark counts the chunk's slices admitted so far (slices go in order);
-- chunk:<i> is what versions before slicing wrote for a whole chunk.
local mark, slice = 'slices:' .. ARGV[7], tonumber(ARGV[9])
if (tonumber(redis.call('HGET', reqk, mark)) or 0) > slice then return 0 end
if redis.call('HEXISTS', reqk, 'chunk:' .. ARGV[7]) == 1 then return 0 end
if redis.call('EXISTS', reqk) == 0 then
  redis.call('HSET', reqk, 'total', 0, 'purged', 0, 'dead', 0, 'superseded', 0, 'created', ARGV[4], 'soft', soft, 'pending', ARGV[8],
    'producer', ARGV[11], 'source', ARGV[12])
end
redis.call('HINCRBY', reqk, 'total', ARGV[6])
if ARGV[10] == '1' then redis.call('HINCRBY', reqk, 'pending', -1) end
redis.call('HSET', reqk, mark, slice + 1)

local kinds = {'files', 'tags', 'hosts', 'prefixes', 'everything'}
local function laneOf(zone, kind, s) return zone .. '|' .. kind .. '|' .. s end
-- covers: a hard purge-everything covers hard and soft items; a soft one
-- only soft items.
local function covers(everythingSoft, itemSoft) return everythingSoft == '0' or itemSoft == '1' end
local function waiting(lane) return redis.call('EXISTS', P .. 'lane:' .. lane) == 1 end
-- drain empties a lane a purge-everything covers; its items' requests
-- are added to counts, to ride with the everything item.
local function drain(lane, counts)
  local items = redis.call('LRANGE', P .. 'lane:' .. lane, 0, -1)
  if #items == 0 then return end
  for _, s in ipairs(take(P, lane, items)) do
    for tok in string.gmatch(s, '%S+') do
      local r, n = parseSource(tok)
      counts[r] = (counts[r] or 0) + n
    end
  end
  forgetLane(P, lane, KEYS[1])
end
local function covered(r, n)
  if n == 0 then return '' end
  return ' ' .. r .. '~' .. n
end

local i = 14
while i <= #ARGV do
  local zone, kind, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  -- a priority has lanes of its own; purge-everything is never queued
  -- behind or ahead of anything
  local own = laneOf(zone, kind, soft)
  if ARGV[13] ~= '' and kind ~= 'everything' then own = own .. '|' .. ARGV[13] end
  -- the waiting purge-everything that covers these items, if any
  local cover
  for _, es in ipairs({'0', '1'}) do
    local e = laneOf(zone, 'everything', es)
    if not cover and e ~= own and covers(es, soft) and waiting(e) then cover = e end
  end
  if cover then
    -- the items are credited when the everything call is accepted
    admitInto(P, cover, rid .. '~' .. n, {'*'}, 1, 1)
  else
    -- A purge-everything within the minimum interval of the last one
    -- sent for the lane merges into it: it rides with that call's outcome
    -- (merged:<call>, credited by record.lua), or, that call accepted
    -- already, is credited at once. After a failed one it goes anew.
    local merged = false
    if kind == 'everything' and not waiting(own) then
      local sent = redis.call('GET', P .. 'everything-sent:' .. own)
      local rec = sent and redis.call('GET', P .. 'recorded:' .. sent)
      if sent and not rec then
        redis.call('RPUSH', P .. 'merged:' .. sent, rid)
        redis.call('PEXPIRE', P .. 'merged:' .. sent, requestIdle)
        merged = true
      elseif rec == '+' then
        credit(rid, 'purged', n)
        merged = true
      end
    end
    if not merged then
    local src = rid
    if kind == 'everything' then
      local counts = {}
      for _, k in ipairs(kinds) do
        for _, s in ipairs({'0', '1'}) do
          local l = laneOf(zone, k, s)
          if l ~= own and covers(soft, s) then drain(l, counts) end
        end
      end
      for r, c in pairs(counts) do src = src .. covered(r, c) end
    end
    admitInto(P, own, src, ARGV, i, i + n - 1)
    markLane(P, own, KEYS[1])
    end
  end
  i = i + n
end
-- crediting (even of nothing) finishes a request whose items are all
-- accounted for once its last chunk is in
credit(rid, 'superseded', 0)
return 1
