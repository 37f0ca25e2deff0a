-- enqueue: appends one message to a conversation's pending list.
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases, 6 stats,
--       7 idem (<prefix>:{p}:idem:<len(conv)>:<conv>:<key>; untouched
--         when ARGV[10] is 0)
-- ARGV: 1..7 common (see includes/common.lua), 8 record tail (JSON object
--       without id and ts_ms), 9 content bytes, 10 has idempotency key
--       (0|1), 11 idempotency ttl ms
-- Returns {message id, 1 if duplicate (nothing stored) else 0}.
-- Cost: every message runs this, so it reads the meta hash once, writes it
-- once, takes its pending count from RPUSH's reply and updates one counter
-- (enqueued, which is also the id sequence).
--@include "common.lua"

local now = rl_now()
local has_idem = ARGV[10] == '1'
if has_idem then
  local old = redis.call('GET', KEYS[7])
  if old then return {old, 1} end
end
local seq = redis.call('HINCRBY', KEYS[6], 'enqueued', 1)
local id = 'm' .. rl_int(now) .. '-' .. ARGV[7] .. '-' .. rl_int(seq)
local head = '{"id":"' .. id .. '","ts_ms":' .. rl_int(now)
local rest = string.sub(ARGV[8], 2)
local rec
if string.match(rest, '^%s*}') then rec = head .. '}' else rec = head .. ',' .. rest end
-- batch_id is set exactly while the conversation has a batch (claim sets
-- it with the batch, ack and dead-lettering clear it with the batch).
local m = redis.call('HMGET', KEYS[1], 'pbytes', 'first_ms', 'batch_id')
local has_batch = m[3] and m[3] ~= ''
local count = redis.call('RPUSH', KEYS[2], ARGV[9] .. ':' .. rec)
local bytes = rl_num(m[1]) + tonumber(ARGV[9])
local first = rl_num(m[2])
if count == 1 then
  first = now
  -- (a meta hash that exists has pbytes: claim and enqueue always set it)
  if not has_batch and m[1] then rl_mark_active() end
end
if has_idem then
  if tonumber(ARGV[11]) > 0 then
    redis.call('SET', KEYS[7], id, 'PX', ARGV[11])
  else
    redis.call('SET', KEYS[7], id)
  end
end
-- A batch (leased, or waiting for its retry) goes first; its own due time
-- stands, and ack/fail/release schedule the pending messages after it.
local signal = nil -- the due time to announce
if not has_batch then
  local due = rl_due_of(now, count, bytes, first, now)
  -- Announced: a new member of ready, or one due now (by name: a member
  -- still waiting in the wake key is not duplicated). A later due time of
  -- a conversation already in ready was announced already (or is earlier).
  -- (ZADD LT CH here, announcing a conversation once, broke the Cluster
  -- chaos run, 4 of 4: not understood yet, so not done.)
  if redis.call('ZADD', KEYS[4], rl_int(due), CONV) == 1 or due <= now then signal = due end
end
-- one write of the meta hash (ann: see rl_signal; a due time now is
-- announced by name), before the announcement: that call is on a key not
-- among KEYS and may fail in a Cluster slot being migrated
local f = {'last_ms', rl_int(now), 'pbytes', rl_int(bytes)}
if count == 1 then f[#f + 1] = 'first_ms'; f[#f + 1] = rl_int(now) end
if signal and signal <= now then f[#f + 1] = 'ann'; f[#f + 1] = rl_int(now) end
redis.call('HSET', KEYS[1], unpack(f))
if signal then rl_signal(signal, now) end
return {id, 0}
