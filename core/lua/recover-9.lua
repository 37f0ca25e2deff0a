-- recover: takes back one expired lease (found by peek-1 on leases; this
-- re-checks atomically that the lease is still expired).
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases, 6 stats, 7 dead,
--       8 deadrec, 9 deadaux
-- ARGV: 1..7 common (see includes/common.lua), 8 max attempts
-- Returns 0 (nothing to do), 1 (recovered: due at once) or 2 (recovered
-- and dead-lettered: attempts spent).
--@include "common.lua"

local now = rl_now()
local exp = redis.call('ZSCORE', KEYS[5], CONV)
if not exp or tonumber(exp) > now then return 0 end
local m = redis.call('HMGET', KEYS[1], 'token', 'lease_until', 'attempts')
if not m[1] or m[1] == '' or rl_num(m[2]) > now then
  -- stray entry (no live lease): drop it
  if not m[1] or m[1] == '' then redis.call('ZREM', KEYS[5], CONV) end
  return 0
end
local attempts = rl_num(m[3])
redis.call('HINCRBY', KEYS[6], 'recovered', 1)
if redis.call('EXISTS', KEYS[3]) == 0 then
  rl_end_lease()
  rl_move_on(now)
  return 1
end
if attempts >= tonumber(ARGV[8]) then
  rl_dead_letter(now, 'lease expired after ' .. rl_int(attempts) .. ' attempts')
  return 2
end
rl_end_lease()
redis.call('ZADD', KEYS[4], rl_int(now), CONV)
return 1
