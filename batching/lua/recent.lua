-- recent.lua reads the newest entries of the purge history in one step.
-- Entries are numbered in the order they were remembered, so the newest
-- are the highest numbers (the oldest leave first, past the retention).
--
-- KEYS[1] the sequence, KEYS[2] history entries (hash: number → entry
-- JSON). ARGV[1] how many.
-- Returns the entries' JSON, newest first (false for one that has left).
local top = tonumber(redis.call('GET', KEYS[1]) or '0')
local seqs = {}
for s = top, math.max(1, top - tonumber(ARGV[1]) + 1), -1 do seqs[#seqs + 1] = s end
if #seqs == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(seqs))
