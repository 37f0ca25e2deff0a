-- renew: extends a lease whose token is still current.
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases
-- ARGV: 1..7 common (see includes/common.lua), 8 token, 9 lease ms
-- Returns {new lease_until ms, pending count} (the messages waiting beyond
-- the in-flight batch, for busy.policy=interrupt), or 0 when the token is
-- stale.
--@include "common.lua"
--@include "lifecycle.lua"

if not rl_token_ok(ARGV[8]) then return 0 end
local lease_until = rl_now() + tonumber(ARGV[9])
redis.call('HSET', KEYS[1], 'lease_until', rl_int(lease_until))
redis.call('ZADD', KEYS[5], rl_int(lease_until), CONV)
return {lease_until, redis.call('LLEN', KEYS[2])}
