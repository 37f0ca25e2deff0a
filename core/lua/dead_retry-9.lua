-- dead_retry: puts a dead batch's messages back in front of its
-- conversation's pending list, in order; due at once unless the
-- conversation has a batch of its own (leased or waiting for a retry).
-- KEYS: 1 meta, 2 pending, 3 batch, 4 ready, 5 leases, 6 stats, 7 dead,
--       8 deadrec, 9 deadaux (all of the dead letter's conversation)
-- ARGV: 1..7 common (see includes/common.lua), 8 dead id
-- Returns the number of messages put back, -1 when the dead letter does
-- not exist, -2 when it belongs to another conversation than ARGV[1].
--@include "common.lua"
--@include "lifecycle.lua"

local id = ARGV[8]
local aux = redis.call('HGET', KEYS[9], id)
if not aux then return -1 end
local t = cmsgpack.unpack(aux)
if t[1] ~= CONV then return -2 end
local entries = t[2]
local now = rl_now()
local before = redis.call('LLEN', KEYS[2])
local has_batch = redis.call('EXISTS', KEYS[3]) == 1
if before == 0 and not has_batch then rl_mark_active() end
local n, bytes = #entries, 0
for i = 1, n do bytes = bytes + rl_entry_size(entries[i]) end
-- LPUSH puts each argument at the head in turn: push from the last entry.
local i = n
while i >= 1 do
  local chunk = {}
  local lo = math.max(1, i - 999)
  for k = i, lo, -1 do chunk[#chunk + 1] = entries[k] end
  redis.call('LPUSH', KEYS[2], unpack(chunk))
  i = lo - 1
end
if n > 0 then
  redis.call('HSET', KEYS[1], 'first_ms', rl_int(rl_entry_ts(entries[1]) or now))
  if before == 0 then redis.call('HSET', KEYS[1], 'last_ms', rl_int(now)) end
end
redis.call('HINCRBY', KEYS[1], 'pbytes', rl_int(bytes))
if n > 0 then redis.call('HINCRBY', KEYS[6], 'requeued', n) end
if not has_batch then
  redis.call('HSET', KEYS[1], 'attempts', '0', 'stalls', '0')
  if n > 0 then rl_ready(now, now) end
end
redis.call('ZREM', KEYS[7], id)
redis.call('HDEL', KEYS[8], id)
redis.call('HDEL', KEYS[9], id)
return n
