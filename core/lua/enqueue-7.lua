-- enqueue: appends one message to a conversation's pending list.
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases, 6 stats,
--       7 idem (<prefix>:{p}:idem:<len(conv)>:<conv>:<key>; untouched
--         when ARGV[10] is 0)
-- ARGV: 1..7 common (see includes/common.lua), 8 record tail (JSON object
--       without id and ts_ms), 9 content bytes, 10 has idempotency key
--       (0|1), 11 idempotency ttl ms
-- Returns {message id, 1 if duplicate (nothing stored) else 0}.
--@include "common.lua"

local now = rl_now()
local has_idem = ARGV[10] == '1'
if has_idem then
  local old = redis.call('GET', KEYS[7])
  if old then return {old, 1} end
end
local seq = redis.call('HINCRBY', KEYS[6], 'seq', 1)
local id = 'm' .. rl_int(now) .. '-' .. ARGV[7] .. '-' .. rl_int(seq)
local head = '{"id":"' .. id .. '","ts_ms":' .. rl_int(now)
local rest = string.sub(ARGV[8], 2)
local rec
if string.match(rest, '^%s*}') then rec = head .. '}' else rec = head .. ',' .. rest end
local before = redis.call('LLEN', KEYS[2])
local has_batch = redis.call('EXISTS', KEYS[3]) == 1
if before == 0 and not has_batch then rl_mark_active() end
redis.call('RPUSH', KEYS[2], ARGV[9] .. ':' .. rec)
if before == 0 then redis.call('HSET', KEYS[1], 'first_ms', rl_int(now)) end
redis.call('HSET', KEYS[1], 'last_ms', rl_int(now))
redis.call('HINCRBY', KEYS[1], 'pbytes', ARGV[9])
redis.call('HINCRBY', KEYS[6], 'pending', 1)
redis.call('HINCRBY', KEYS[6], 'enqueued', 1)
if has_idem then
  if tonumber(ARGV[11]) > 0 then
    redis.call('SET', KEYS[7], id, 'PX', ARGV[11])
  else
    redis.call('SET', KEYS[7], id)
  end
end
-- A batch (leased, or waiting for its retry) goes first; its own due time
-- stands, and ack/fail/release schedule the pending messages after it.
if not has_batch then
  redis.call('ZADD', KEYS[4], rl_int(rl_due(now)), CONV)
end
return {id, 0}
