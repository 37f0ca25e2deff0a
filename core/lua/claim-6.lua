-- claim: leases one conversation whose due time has come.
-- The caller found it with peek-1 on ready; this re-checks atomically that
-- it is still due and unleased.
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases, 6 stats
-- ARGV: 1..7 common (see includes/common.lua), 8 owner, 9 lease ms
-- Returns nil when not claimable (no longer due, or leased meanwhile), else
-- {batch id, token, attempt, lease_until ms, messages JSON array,
--  checkpoint JSON or nil, settle JSON or nil} (settle: the checkpoint of
--  the conversation's last dead-lettered batch, see store.h claim).
--@include "common.lua"

local now = rl_now()
local due = redis.call('ZSCORE', KEYS[4], CONV)
if not due or tonumber(due) > now then return false end
local token = redis.call('HGET', KEYS[1], 'token')
if token and token ~= '' then
  redis.call('ZREM', KEYS[4], CONV) -- a leased conversation is never ready
  return false
end
local attempts, bid
if redis.call('EXISTS', KEYS[3]) == 1 then
  -- a retry (or a released / recovered batch): the same batch again
  attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  bid = redis.call('HGET', KEYS[1], 'batch_id')
else
  local maxm, maxb = tonumber(ARGV[4]), tonumber(ARGV[5])
  local entries = redis.call('LRANGE', KEYS[2], 0, maxm - 1)
  local n, bytes = 0, 0
  for i = 1, #entries do
    local sz = rl_entry_size(entries[i])
    if n > 0 and bytes + sz > maxb then break end
    n = n + 1
    bytes = bytes + sz
  end
  if n == 0 then
    redis.call('ZREM', KEYS[4], CONV)
    return false
  end
  for i = 1, n, 1000 do
    redis.call('RPUSH', KEYS[3], unpack(entries, i, math.min(n, i + 999)))
  end
  redis.call('LTRIM', KEYS[2], n, -1)
  redis.call('HINCRBY', KEYS[1], 'pbytes', rl_int(-bytes))
  redis.call('HINCRBY', KEYS[6], 'pending', rl_int(-n))
  local nexthead = redis.call('LINDEX', KEYS[2], 0)
  if nexthead then
    redis.call('HSET', KEYS[1], 'first_ms', rl_int(rl_entry_ts(nexthead) or now))
  end
  local seq = redis.call('HINCRBY', KEYS[6], 'seq', 1)
  bid = 'b' .. rl_int(now) .. '-' .. ARGV[7] .. '-' .. rl_int(seq)
  attempts = 1
  redis.call('HSET', KEYS[1], 'batch_id', bid, 'attempts', '1', 'stalls', '0', 'ckpt', '')
end
local fence = redis.call('HINCRBY', KEYS[6], 'fence', 1)
local lease_until = now + tonumber(ARGV[9])
redis.call('HSET', KEYS[1], 'token', rl_int(fence), 'owner', ARGV[8],
           'lease_until', rl_int(lease_until))
redis.call('ZREM', KEYS[4], CONV)
redis.call('ZADD', KEYS[5], rl_int(lease_until), CONV)
local m = redis.call('HMGET', KEYS[1], 'ckpt', 'settle')
local ckpt, settle = m[1], m[2]
if not ckpt or ckpt == '' then ckpt = false end
if not settle or settle == '' then settle = false end
return {bid, rl_int(fence), attempts, lease_until,
        rl_join(redis.call('LRANGE', KEYS[3], 0, -1)), ckpt, settle}
