-- finished.lua marks a request failed as a whole, with the reason (its
-- staged items were lost before admission), and notes the end for its
-- follow-ups (credit.lua's ended).
--
-- KEYS[1] the request's status hash. ARGV[1] prefix, ARGV[2] retention
-- ms, ARGV[3] request id, ARGV[4] reason. Returns 1.
redis.call('HSET', KEYS[1], 'error', ARGV[4], 'finished', exact(now))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
ended(ARGV[3], 'failed')
return 1
