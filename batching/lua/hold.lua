-- hold.lua keeps the dispatcher from looking at a lane again before its
-- partial chunk could leave (the limits are busy), unless items arrive.
--
-- KEYS[1] the ready index. ARGV[1] lane id, ARGV[2] how long (ms).
-- Returns 1 if the lane was held, 0 if it is not in the index any more.
return redis.call('ZADD', KEYS[1], 'XX', 'CH', exact(now + tonumber(ARGV[2])), ARGV[1])
