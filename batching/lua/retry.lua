-- retry.lua puts dead-lettered items back into their lanes, as waiting
-- items of the requests they came from, and removes their entries. The
-- items then go out in new calls with a fresh retry budget; the requests'
-- dead counts go down again and they are no longer finished.
--
-- KEYS[1] dead-letter hash, KEYS[2] dead-letter times, KEYS[3] lanes set.
-- ARGV[1] prefix, ARGV[2…] entry ids. Returns the number of entries retried.
local P = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  if raw then
    local e = cjson.decode(raw)
    local soft = '0'
    if e.soft == true then soft = '1' end
    local lane = e.zone .. '|' .. e.kind .. '|' .. soft
    -- entries made before sources were kept name their requests only
    local src = e.sources
    if type(src) ~= 'string' then
      src = ''
      if type(e.requests) == 'table' then src = table.concat(e.requests, ' ') end
    end
    for tok in string.gmatch(src, '%S+') do
      local rid, c = parseSource(tok)
      local rk = P .. 'req:' .. rid
      if redis.call('EXISTS', rk) == 1 then
        redis.call('HINCRBY', rk, 'dead', -c)
        redis.call('HDEL', rk, 'finished')
        redis.call('PEXPIRE', rk, $REQUEST_IDLE_MS)
      end
    end
    admitInto(P, lane, src, {e.item}, 1, 1)
    markLane(P, lane, KEYS[3])
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
