-- record.lua records a call's outcome once: it releases the call's window
-- slot, credits the requests of its purged items, stores a dead-letter
-- entry per dead item, crediting those as dead, and puts the calls that
-- send the rest again in flight (the dispatcher's reaper hands them to
-- asynq if the caller cannot). The recorded marker keeps the ids of the
-- dead entries, so that a task re-run after a crash can mirror them.
-- Recording a call again (a task re-run, or a retry after a lost reply)
-- changes nothing.
--
-- KEYS[1] the scope's outstanding calls, KEYS[2] dead-letter hash,
-- KEYS[3] dead-letter times, KEYS[4] the call's recorded marker, KEYS[5]
-- in-flight hash, KEYS[6] in-flight times.
-- ARGV[1] prefix, ARGV[2] retention ms, ARGV[3] call id, ARGV[4] marker
-- TTL ms, ARGV[5] number of purged items p, ARGV[6…5+p] their sources,
-- then the number of dead items d and d triples of dead entry id, entry
-- JSON, sources, then pairs of re-sent call id and payload.
-- Returns 1, or 0 if the call was recorded before.
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[3])
local p = tonumber(ARGV[5])
local purged = {}
for i = 6, 5 + p do purged[#purged + 1] = ARGV[i] end
creditSources(purged, 'purged')
local d = tonumber(ARGV[6 + p])
local dead, ids = {}, {}
local i = 7 + p
for _ = 1, d do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[3], exact(now), ARGV[i])
    dead[#dead + 1] = ARGV[i + 2]
  end
  ids[#ids + 1] = ARGV[i]
  i = i + 3
end
creditSources(dead, 'dead')
-- purge-everything requests merged into this call while it was in flight
-- (admit.lua) share its outcome; a dead entry names them, so that a retry
-- sends them too
local mk = ARGV[1] .. 'merged:' .. ARGV[3]
local merged = redis.call('LRANGE', mk, 0, -1)
if #merged > 0 then
  if p > 0 then
    creditSources(merged, 'purged')
  elseif d > 0 then
    creditSources(merged, 'dead')
    local raw = redis.call('HGET', KEYS[2], ARGV[7 + p])
    if raw then
      local e = cjson.decode(raw)
      e.sources = (e.sources or '') .. ' ' .. table.concat(merged, ' ')
      for _, tok in ipairs(merged) do
        local rid = parseSource(tok)
        e.requests[#e.requests + 1] = rid
      end
      redis.call('HSET', KEYS[2], ARGV[7 + p], cjson.encode(e))
    end
  end
  redis.call('DEL', mk)
end
for j = i, #ARGV, 2 do
  redis.call('HSET', KEYS[5], ARGV[j], ARGV[j + 1])
  redis.call('ZADD', KEYS[6], exact(now), ARGV[j])
end
redis.call('SET', KEYS[4], '+' .. table.concat(ids, ' '), 'PX', ARGV[4])
return 1
