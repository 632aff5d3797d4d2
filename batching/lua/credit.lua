-- credit.lua is shared by the scripts that credit requests. ARGV[1] is the
-- key prefix, ARGV[2] the retention of finished requests (ms).
--
-- A call's source list names, per item, the requests it is for: a token is
-- a request id (one item of that request), or rid~n: n items of that
-- request that a purge-everything covers, carried by the everything item
-- so that they are credited (as superseded) only when that call is
-- accepted, and dead-lettered with it.
local P = ARGV[1]
-- requestIdle: a request that makes no progress for this long expires
-- (finished ones expire after the retention).
local requestIdle = $REQUEST_IDLE_MS
-- ended notes that a request ended in state (done or failed) when it has
-- follow-ups (a callback, a repeat: its meta hash): "rid state" goes onto
-- the ended list once per end, in the same script as the counters that
-- end it, and a worker turns it into asynq tasks (internal/callback). A
-- request that ends again later (its dead items retried) is noted again.
local function ended(rid, state)
  local m = P .. 'meta:' .. rid
  local v = redis.call('HMGET', m, 'callback', 'repeat_after', 'ended')
  if (not v[1] and not v[2]) or v[3] == state then return end
  redis.call('HSET', m, 'ended', state)
  redis.call('PEXPIRE', m, ARGV[2])
  redis.call('RPUSH', P .. 'ended', rid .. ' ' .. state)
end
-- credit adds n to a request's counter and, once every item is accounted
-- for, marks it finished and lets it expire after the retention (ARGV[2]).
local function credit(rid, field, n)
  local k = P .. 'req:' .. rid
  if redis.call('EXISTS', k) == 0 then return end
  redis.call('HINCRBY', k, field, n)
  local v = redis.call('HMGET', k, 'total', 'purged', 'dead', 'superseded', 'pending', 'error')
  -- pending counts the chunks of a large request not yet admitted.
  if (tonumber(v[5]) or 0) == 0 and (tonumber(v[2]) or 0) + (tonumber(v[3]) or 0) + (tonumber(v[4]) or 0) >= (tonumber(v[1]) or 0) then
    redis.call('HSET', k, 'finished', exact(now))
    redis.call('PEXPIRE', k, ARGV[2])
    local state = 'done'
    if (tonumber(v[3]) or 0) > 0 or v[6] then state = 'failed' end
    ended(rid, state)
  else
    redis.call('PEXPIRE', k, requestIdle)
    redis.call('PEXPIRE', P .. 'meta:' .. rid, requestIdle)
  end
end
-- creditSources credits every token of a list of source lists: field for
-- request ids, superseded for rid~n when field is purged (else field).
local function creditSources(sources, field)
  local counts = {}
  for _, s in ipairs(sources) do
    for tok in string.gmatch(s, '%S+') do
      local rid, n, sup = parseSource(tok)
      local f = field
      if sup and field == 'purged' then f = 'superseded' end
      local k = f .. ' ' .. rid
      counts[k] = (counts[k] or 0) + n
    end
  end
  for k, n in pairs(counts) do
    local f, rid = string.match(k, '^(%S+) (.*)$')
    credit(rid, f, n)
  end
end
