-- ready.lua lists the lanes the dispatcher should look at now: those of
-- the ready index (lanes.lua) scored at or before the server's time.
--
-- KEYS[1] the ready index. ARGV[1] the most lanes to list.
-- Returns lane ids, the longest-ready first.
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', exact(now), 'LIMIT', 0, tonumber(ARGV[1]))
