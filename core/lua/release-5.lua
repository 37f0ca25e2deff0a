-- release: gives the lease back without spending an attempt; the batch is
-- due at once (ARGV[9] = 0) or after a delay (defer).
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases
-- ARGV: 1..7 common (see includes/common.lua), 8 token, 9 delay ms (>= 0)
-- Returns 1, or 0 when the token is stale (nothing changed).
--@include "common.lua"
--@include "lifecycle.lua"

if not rl_token_ok(ARGV[8]) then return 0 end
local now = rl_now()
rl_end_lease()
local attempts = rl_num(redis.call('HGET', KEYS[1], 'attempts'))
if attempts > 0 then redis.call('HSET', KEYS[1], 'attempts', rl_int(attempts - 1)) end
local delay = tonumber(ARGV[9])
if delay < 0 then delay = 0 end
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('LLEN', KEYS[2]) > 0 then
  rl_ready(now + delay, now)
end
return 1
