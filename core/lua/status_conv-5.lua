-- status_conv: a consistent snapshot of one conversation.
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases
-- ARGV: 1..7 common (see includes/common.lua)
-- Returns {now, pending count, batch count, attempts, batch id, owner,
-- token, lease_until, due ("" when not in ready), last error, state}
-- where state is idle|waiting|ready|leased|backoff.
--@include "common.lua"
--@include "lifecycle.lua"

local now = rl_now()
local m = redis.call('HMGET', KEYS[1], 'attempts', 'batch_id', 'owner', 'token',
                     'lease_until', 'last_error')
local pending = redis.call('LLEN', KEYS[2])
local inbatch = redis.call('LLEN', KEYS[3])
local due = redis.call('ZSCORE', KEYS[4], CONV)
local token = m[4] or ''
local state = 'idle'
if token ~= '' then
  state = 'leased'
elseif due then
  if tonumber(due) <= now then state = 'ready'
  elseif inbatch > 0 then state = 'backoff'
  else state = 'waiting' end
end
return {rl_int(now), pending, inbatch, rl_int(rl_num(m[1])), m[2] or '', m[3] or '',
        token, rl_int(rl_num(m[5])), due or '', m[6] or '', state}
