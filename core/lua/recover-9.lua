-- recover: takes back one expired lease (found by peek-1 on leases; this
-- re-checks atomically that the lease is still expired).
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases, 6 stats, 7 dead,
--       8 deadrec, 9 deadaux
-- ARGV: 1..7 common (see includes/common.lua), 8 max stalls
-- An expired lease is a stall (the worker died or stalled), not an
-- attempt: stalls + 1, and fail-9 leaves stalls out of the attempts.
-- Returns 0 (nothing to do), 1 (recovered: due at once) or 2 (recovered
-- and dead-lettered: more stalls than max stalls).
--@include "common.lua"
--@include "lifecycle.lua"

local now = rl_now()
local exp = redis.call('ZSCORE', KEYS[5], CONV)
if not exp or tonumber(exp) > now then return 0 end
local m = redis.call('HMGET', KEYS[1], 'token', 'lease_until')
if not m[1] or m[1] == '' or rl_num(m[2]) > now then
  -- stray entry (no live lease): drop it
  if not m[1] or m[1] == '' then redis.call('ZREM', KEYS[5], CONV) end
  return 0
end
redis.call('HINCRBY', KEYS[6], 'recovered', 1)
if redis.call('EXISTS', KEYS[3]) == 0 then
  rl_end_lease()
  rl_move_on(now)
  return 1
end
local stalls = redis.call('HINCRBY', KEYS[1], 'stalls', 1)
if stalls > tonumber(ARGV[8]) then
  -- Same text as m_recover in store_memory.c.
  rl_dead_letter(now, 'lease expired ' .. rl_int(stalls) .. ' times, more than max.stalls (' ..
                 ARGV[8] .. '): the workers holding the batch died or stalled')
  return 2
end
rl_end_lease()
rl_ready(now, now)
return 1
