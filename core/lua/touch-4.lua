-- touch: activity without a message; restarts the quiet window.
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready
-- ARGV: 1..7 common (see includes/common.lua)
-- Returns 1.
--@include "common.lua"
--@include "lifecycle.lua"

local now = rl_now()
local existed = redis.call('EXISTS', KEYS[1]) == 1
local count = redis.call('LLEN', KEYS[2])
local has_batch = redis.call('EXISTS', KEYS[3]) == 1
if count == 0 and not has_batch and not existed then
  return 1 -- nothing queued: nothing to delay, store nothing
end
redis.call('HSET', KEYS[1], 'last_ms', rl_int(now))
if count > 0 and not has_batch then
  redis.call('ZADD', KEYS[4], rl_int(rl_due(now)), CONV)
end
return 1
