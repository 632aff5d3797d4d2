-- remember.lua keeps an accepted call in the purge history, once: one
-- entry for the call under a short sequence number, and that number
-- appended to each item's index for the day (a hash from a 10-byte digest
-- of zone|kind|item to numbers; the index of a day expires after the
-- retention).
--
-- KEYS[1] history entries (hash: number → entry JSON), KEYS[2] entry
-- times (sorted set of numbers), KEYS[3] the day's item index, KEYS[4]
-- call ids remembered (hash: call id → number), KEYS[5] the sequence.
-- ARGV[1] call id, ARGV[2] entry JSON (without its call id), ARGV[3]
-- retention ms, ARGV[4] most numbers kept per item and day, ARGV[5]
-- zone|kind|, ARGV[6…] items.
-- Returns the entry's number (the same when remembered before).
--
-- A number in an index may carry one letter after it: the verification of
-- that item in that call (History.SetVerification), so trimming drops
-- whole "number[letter] " references.
local prev = redis.call('HGET', KEYS[4], ARGV[1])
if prev then return tonumber(prev) end
local seq = redis.call('INCR', KEYS[5])
redis.call('HSET', KEYS[4], ARGV[1], seq)
redis.call('HSET', KEYS[1], seq, ARGV[2])
redis.call('ZADD', KEYS[2], exact(now), seq)
local ref = seq .. ' '
local keep = tonumber(ARGV[4]) * 8
for i = 6, #ARGV do
  local d = string.gsub(redis.sha1hex(ARGV[5] .. ARGV[i]):sub(1, 20), '..', function(x) return string.char(tonumber(x, 16)) end)
  local n = (redis.call('HGET', KEYS[3], d) or '') .. ref
  if #n > keep then n = n:sub(#n - keep + 1):gsub('^[^ ]* ?', '', 1) end
  redis.call('HSET', KEYS[3], d, n)
end
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[3]) + 86400000)
-- entries older than the retention leave, a few at a time
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', exact(now - tonumber(ARGV[3])), 'LIMIT', 0, 20)
for _, s in ipairs(old) do
  local raw = redis.call('HGET', KEYS[1], s)
  if raw then
    local ok, e = pcall(cjson.decode, raw)
    if ok and type(e) == 'table' and e.call then redis.call('HDEL', KEYS[4], e.call) end
  end
  redis.call('HDEL', KEYS[1], s)
  redis.call('ZREM', KEYS[2], s)
end
return seq
